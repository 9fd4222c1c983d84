"""The progress hooks a front end implements; kept free of torch so the CLI starts fast."""

from __future__ import annotations

from typing import Any


class Reporter:
    """Hooks the CLI implements to show progress; the library itself prints nothing."""

    def start(self, epochs: int, steps_per_epoch: int, info: dict[str, Any]) -> None: ...

    def step(self, epoch: int, loss: float) -> None: ...

    def epoch_end(self, record: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...
