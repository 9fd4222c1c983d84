"""The progress hooks a front end implements; kept free of torch so the CLI starts fast."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Reporter:
    """Hooks the CLI implements to show progress; the library itself prints nothing."""

    def start(self, epochs: int, steps_per_epoch: int, info: dict[str, Any]) -> None: ...

    def step(self, epoch: int, loss: float) -> None: ...

    def epoch_end(self, record: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...

    def stage_start(self, description: str, total: int | None) -> None:
        """A step outside the epochs begins (reading data, decoding, embedding, fitting): without it
        a frozen-encoder run sat silent for the tens of seconds its embeddings took. ``total``: the
        units ``stage_advance`` will count (None: no count, show that it is busy)."""

    def stage_advance(self, n: int) -> None: ...

    def stage_end(self) -> None: ...

    @contextmanager
    def stage(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """``with reporter.stage("embedding 640 train images", 640) as advance:`` brackets one step."""
        self.stage_start(description, total)
        try:
            yield self.stage_advance
        finally:
            self.stage_end()


class Forwarding(Reporter):
    """A reporter that passes every hook on to ``inner``: the base of one that watches a run on the
    way (``tune``'s pruning) and overrides only the hooks it reads."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner

    def start(self, epochs: int, steps_per_epoch: int, info: dict[str, Any]) -> None:
        self.inner.start(epochs, steps_per_epoch, info)

    def step(self, epoch: int, loss: float) -> None:
        self.inner.step(epoch, loss)

    def epoch_end(self, record: dict[str, Any]) -> None:
        self.inner.epoch_end(record)

    def finish(self, summary: dict[str, Any]) -> None:
        self.inner.finish(summary)

    def stage_start(self, description: str, total: int | None) -> None:
        self.inner.stage_start(description, total)

    def stage_advance(self, n: int) -> None:
        self.inner.stage_advance(n)

    def stage_end(self) -> None:
        self.inner.stage_end()
