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
