"""Rich rendering of training progress and results, shared by the commands that train."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from instacli.cli.common import per_second
from instacli.progress import Reporter


class RunBar(Reporter):
    """A live bar for one training run with the running loss and the last validation accuracy.

    ``transient`` bars (one per run inside ``compare``) vanish when the run ends and are drawn only
    on a terminal; the ``train`` command keeps its bar.
    """

    def __init__(self, console: Console, enabled: bool = True, transient: bool = False, indent: str = "") -> None:
        self.console, self.enabled, self.transient, self.indent = console, enabled, transient, indent
        self.progress: Progress | None = None
        self.stage_started = 0.0

    @property
    def drawn(self) -> bool:
        return self.enabled and (self.console.is_terminal or not self.transient)

    def stage_start(self, description: str, total: int | None) -> None:
        """A transient spinner (and bar when counted) while a step before or after the epochs runs."""
        self.stop()  # rich draws one live display at a time: the epochs' bar is done when a stage follows it
        self.stage_started = time.perf_counter()
        if not (self.enabled and self.console.is_terminal):  # a log gets the line RichReporter prints at the end
            return
        columns = [SpinnerColumn(), TextColumn(self.indent + "{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn()]
        self.progress = Progress(*columns, TimeElapsedColumn(), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task(description, total=total)

    def stage_advance(self, n: int) -> None:
        if self.progress:
            self.progress.advance(self.task, n)

    def stage_end(self) -> None:
        self.stop()

    def start(self, epochs: int, steps_per_epoch: int, info: dict[str, Any]) -> None:
        if not self.drawn or epochs == 0:  # no epochs: the run was fitted directly
            return
        self.progress = Progress(
            TextColumn(self.indent + "epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  val acc {task.fields[acc]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=self.transient,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=epochs * steps_per_epoch, epoch=1, epochs=epochs, loss=0.0, acc="-")

    def step(self, epoch: int, loss: float) -> None:
        if self.progress:
            self.progress.update(self.task, advance=1, epoch=epoch, loss=loss)

    def epoch_end(self, record: dict[str, Any]) -> None:
        if self.progress:
            acc = record.get("val_accuracy")
            self.progress.update(self.task, acc=f"{acc:.3f}" if acc is not None else "-")

    def finish(self, summary: dict[str, Any]) -> None:
        self.stop()

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()
            self.progress = None


class RichReporter(RunBar):
    """The ``train`` command's view: a header, the live bar, then a table of epochs and where the run went."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        super().__init__(console, enabled)
        self.records: list[dict[str, Any]] = []
        self.stage_description = ""

    def stage_start(self, description: str, total: int | None) -> None:
        self.stage_description = description
        super().stage_start(description, total)

    def stage_end(self) -> None:
        """Leave a line for every step that took a second or more, so the summary's time adds up."""
        super().stage_end()
        seconds = time.perf_counter() - self.stage_started
        if self.enabled and seconds >= 1:
            self.console.print(f"[dim]{self.stage_description}: {seconds:.1f} s[/]", highlight=False)

    def start(self, epochs: int, steps_per_epoch: int, info: dict[str, Any]) -> None:
        if self.enabled:
            self.console.print(
                f"[bold]training[/] → {info['run']}  ({info['device']}, precision {info['mixed_precision']}, "
                f"{info['processes']} process{'es' if info['processes'] > 1 else ''})"
            )
        super().start(epochs, steps_per_epoch, info)

    def epoch_end(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        super().epoch_end(record)

    def _rows_to_show(self, most: int = 12) -> list[dict[str, Any]]:
        """Every epoch of a short run; for a long one, evenly spaced epochs plus every best and the last."""
        if len(self.records) <= most:
            return self.records
        step = -(-len(self.records) // most)
        return [r for i, r in enumerate(self.records) if i % step == 0 or r["best"] or i == len(self.records) - 1]

    def finish(self, summary: dict[str, Any]) -> None:
        self.stop()
        if not self.enabled:
            return
        title = (f"Training summary — best epoch {summary['best_epoch']} of {summary['epochs_run']}" if summary["epochs_run"]
                 else "Fitted directly on the frozen embeddings — no epochs")
        table = Table(title=title)
        for col in ("epoch", "train loss", "val loss", "val acc", "val likes loss", "img/s", ""):
            table.add_column(col, justify="right")
        for r in self._rows_to_show():
            acc = r.get("val_accuracy")
            table.add_row(
                str(r["epoch"]), f"{r['train_loss']:.3f}", f"{r['val_loss']:.3f}", f"{acc:.3f}" if acc is not None else "-",
                f"{r['val_likes_loss']:.3f}", per_second(r["images_per_second"]), "★" if r["best"] else "",
            )
        self.console.print(table)
        self.console.print(
            f"[green]saved[/] {summary['run']}  ({summary['seconds']:.0f} s, {per_second(summary['images_per_second'])} images/s)"
        )
