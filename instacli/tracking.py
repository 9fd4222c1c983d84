"""Experiment tracking (``--report-to tensorboard,mlflow``) through accelerate's trackers.

Each run logs its settings as hyperparameters, the loss and learning rate of every optimizer step
(``train/loss``, ``train/lr``), every epoch's record (``epoch/val_loss``, ``epoch/val_accuracy``, …)
and, at the end, the curves figure. TensorBoard writes its event files into ``RUN/logs/`` (:data:`instacli.run_folder.TRACKER_LOGS`); MLflow
logs to ``MLFLOW_TRACKING_URI`` (its own default, ``./mlruns``, when unset), the experiment named
by ``MLFLOW_EXPERIMENT_NAME`` or else after the run folder. ``trackio`` and ``wandb`` work the same
way once their package is installed (and, for wandb, logged in).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from instacli.errors import InstacliError

#: ``--report-to`` choices → the package each needs.
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio", "wandb": "wandb"}


def check_installed(report_to: list[str]) -> None:
    """Refuse a tracker whose package is missing before anything trains (accelerate would only warn)."""
    for name in report_to:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            extra = ' (pip install -e ".[track]")' if name in ("tensorboard", "mlflow") else ""
            raise InstacliError(f"--report-to {name}: the {TRACKERS[name]} package is not installed; install it{extra} or drop {name}")


def hyperparameters(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as the scalar values trackers accept (TensorBoard's hparams take no lists, dicts or None)."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str) for k, v in settings.items()}


def start(accelerator: Accelerator, run: Path, settings: dict[str, Any]) -> None:
    if accelerator.log_with:
        accelerator.init_trackers(run.name, config=hyperparameters(settings), init_kwargs={"mlflow": {"run_name": run.name}})


def log_epoch(accelerator: Accelerator, record: dict[str, Any], step: int) -> None:
    """An epoch's numbers (``epoch/…``), at the optimizer step it ended on."""
    numbers = {f"epoch/{k}": float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    accelerator.log(numbers, step=step)


def log_curves(accelerator: Accelerator, curves: Path) -> None:
    """The curves figure: an image in TensorBoard, an artifact in MLflow (the trainer closes the trackers)."""
    if curves.is_file() and accelerator.is_main_process:
        for tracker in accelerator.trackers:
            if tracker.name == "mlflow":
                tracker.log_artifact(str(curves))
            elif tracker.name == "tensorboard":
                import numpy as np
                from PIL import Image

                tracker.log_images({"curves": np.asarray(Image.open(curves).convert("RGB"))}, dataformats="HWC")
