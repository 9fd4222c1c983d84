"""``instacli train``: parse flags, resolve settings, call :func:`instacli.training.train`, print.

Its flags are generated from :class:`instacli.settings.TrainSettings` (:mod:`instacli.cli.settings_flags`):
each setting's default and help live in one place, its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from instacli.cli.common import console
from instacli.cli.progress import RichReporter
from instacli.cli.settings_flags import with_settings_flags
from instacli.settings import TrainSettings, load_settings


app = typer.Typer()


@app.command("train")
@with_settings_flags(TrainSettings)
def train_command(
    settings: dict[str, Any],
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with settings (flags and INSTACLI_* env win)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or tables."),
) -> None:
    """Train an encoder + heads on a dataset and write a run folder (model.safetensors, config.json, metrics)."""
    from instacli.launch import process_state, relaunch_cpu_processes  # torch loads only when a command runs
    from instacli.training import train, with_run_settings

    relaunch_cpu_processes()
    resolved = load_settings(config, **with_run_settings(settings))
    reporter = RichReporter(console, enabled=not quiet and process_state().is_main_process)
    train(resolved, reporter)
