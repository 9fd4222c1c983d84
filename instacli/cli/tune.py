"""``instacli tune``: a hyperparameter search (Optuna) over :func:`instacli.training.train`; see :mod:`instacli.tune`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.table import Table

from instacli.cli.common import console
from instacli.cli.progress import RunBar
from instacli.errors import InstacliError
from instacli.registry import Count, PositiveFloat
from instacli.run_folder import default_out
from instacli.cli.settings_flags import setting_option
from instacli.settings import TrainSettings, check_flag, load_settings, parse_duration, parse_options
from instacli.progress import Reporter
from instacli.tune import BEST, METRICS, TuneReporter, TuneSettings, load_tune_settings, tune

app = typer.Typer()


def _settings_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _value_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(trials: list[dict[str, Any]], metric: str) -> Table:
    """One row per trial; the searched settings in one wrapped column, as they are many."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("trial", "state", metric, "epochs"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("settings", ratio=1)
    for t in trials:
        epochs = "-" if t["epochs_run"] is None else str(t["epochs_run"])
        table.add_row(f"{t['number']}{' *' if t['best'] else ''}", t["state"].lower(), _value_text(t["value"]), epochs, _settings_text(t["params"]))
    return table


class RichTuneReporter(TuneReporter):
    """A line when a trial starts (its settings), a live bar while it trains, a line when it ends."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = RunBar(console, enabled=False)

    def trial_start(self, number: int, params: dict[str, Any]) -> Reporter:
        if self.enabled:
            console.print(f"[bold]trial {number}[/]: {_settings_text(params)}", highlight=False)
        self.bar = RunBar(console, self.enabled, transient=True, indent="    ")
        return self.bar

    def trial_end(self, trial: dict[str, Any]) -> None:
        self.bar.stop()
        if self.enabled:
            epochs = "" if trial["epochs_run"] is None else f" after {trial['epochs_run']} epoch(s)"
            console.print(f"    {trial['state'].lower()}{epochs}: {_value_text(trial['value'])}", highlight=False)


@app.command("tune")
def tune_command(
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder from `instacli data build` (not with --resume).", show_default=False),
    encoder: Optional[str] = setting_option(TrainSettings, "encoder"),
    regressor: Optional[str] = setting_option(TrainSettings, "regressor"),
    task: Optional[str] = setting_option(TrainSettings, "task"),
    epochs: Optional[int] = setting_option(TrainSettings, "epochs", "The most of a trial: each draws between a third of it and all."),
    batch_size: Optional[int] = setting_option(TrainSettings, "batch_size"),
    encoder_option: Optional[list[str]] = setting_option(TrainSettings, "encoder_options"),
    regressor_option: Optional[list[str]] = setting_option(TrainSettings, "regressor_options"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with any other `train` settings, the base of every trial."),
    trials: Optional[int] = typer.Option(None, help="Finished trials the study should hold (a resumed study runs the missing ones).", show_default=str(TuneSettings.model_fields["trials"].default)),
    time_budget: Optional[str] = typer.Option(None, help="Time for this invocation, e.g. 30m: no trial starts after it, the running one stops at its next epoch end."),
    metric: Optional[str] = typer.Option(None, help="What trials are judged by on the validation split: loss (cross-entropy + likes loss, unweighted)|accuracy|likes.", show_default=str(TuneSettings.model_fields["metric"].default)),
    out: Optional[Path] = typer.Option(None, "--out", help="Study folder: trials/, best/, results.json, trials.csv, history.png, study.db.", show_default="runs/tune-<encoder>-<time>"),
    resume: bool = typer.Option(False, "--resume", help="Continue the study in --out (its own settings; --trials and --time-budget may change)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per trial, no table."),
) -> None:
    """Search learning rates, weight decay, likes weight, augmentation and epochs with Optuna (TPE, median pruning);
    the best run is copied to OUT/best."""
    if metric is not None and metric not in METRICS:
        raise InstacliError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    trials = check_flag("--trials", trials, Optional[Count])
    seconds = check_flag("--time-budget", parse_duration(time_budget), Optional[PositiveFloat])
    train_flags = dict(
        data=data, encoder=encoder, regressor=regressor, task=task, epochs=epochs, batch_size=batch_size,
        encoder_options=parse_options(encoder_option, "--encoder-option"),
        regressor_options=parse_options(regressor_option, "--regressor-option"),
    )
    if resume:
        if out is None:
            raise InstacliError("--resume: give the folder of the study to continue with --out")
        given = [f"--{name.replace('_', '-')}" for name, value in {**train_flags, "config": config, "metric": metric}.items() if value is not None]
        if given:
            raise InstacliError(f"--resume continues the study with its own settings; drop {', '.join(given)} or start a new study")
        saved = load_tune_settings(out)
        settings = saved.model_copy(update={"trials": trials or saved.trials, "time_budget": seconds})
    else:
        base = load_settings(config, **train_flags)
        out = out or default_out(base.encoder, "tune-")
        settings = TuneSettings(train=base, out=out, trials=trials or TuneSettings.model_fields["trials"].default,
                                time_budget=seconds, metric=metric or TuneSettings.model_fields["metric"].default)

    reporter = RichTuneReporter(enabled=not quiet)
    try:
        result = tune(settings, resume=resume, reporter=reporter)
    finally:  # a failed or interrupted trial leaves no live bar behind its message
        reporter.bar.stop()
    if quiet:
        return
    console.print(_table(result.trials, settings.metric))
    if result.stopped_by_time:
        console.print(f"time budget reached after {len(result.trials)} trial(s) in this study")
    if result.best is None:
        console.print("[yellow]no trial finished: no best run yet[/]")
    else:
        console.print(f"[green]best[/]: trial {result.best['number']} ({settings.metric} {result.best['value']:.4f}), copied to {settings.out / BEST}")
