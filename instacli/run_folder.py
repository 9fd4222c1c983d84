"""The run folder that ``instacli train`` writes: the one home of its file names.

A finished run holds the weights (safetensors, no pickles), the config that rebuilds the network
offline, the settings it was trained with, one metrics record per epoch and their plot. Evaluations
go inside it too (:mod:`instacli.eval_folders`), and an unfinished run keeps its resume state in
``checkpoint/`` (:mod:`instacli.training`).
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
SETTINGS = "settings.json"
EPOCH_METRICS = "metrics.jsonl"
CURVES = "curves.png"


def is_run(path: Path | str) -> bool:
    """Whether ``path`` is a trained run's folder (its config and weights are there)."""
    return (Path(path) / CONFIG).is_file() and (Path(path) / WEIGHTS).is_file()
