"""The run folder that ``instacli train`` writes: the one home of its file names and of how its
files are read and found.

::

    RUN/
      model.safetensors   the weights (safetensors, no pickles)       instacli.model.save_model
      config.json         what rebuilds the network offline             instacli.model.ModelConfig
      settings.json       the settings it was trained with              instacli.settings.TrainSettings
      metrics.jsonl       one record per finished epoch
      curves.png          their plot
      logs/               TensorBoard event files (--report-to tensorboard)
      checkpoint/         resume state of an unfinished run (accelerate's files + trainer_state.json);
                          checkpoint.tmp/ and checkpoint.old/ exist only while one is being swapped in
      eval/<data>-<split>/  one folder per evaluation: metrics.json and its figures (see below)

A finished run has weights and config and no checkpoint; a resumable one has a complete checkpoint.
Kept free of torch: the report and ``compare`` read run folders without loading a model.

Evaluations: ``RUN/eval/<data name>-<split>/`` (``…-folder/`` for a plain photo folder, every photo;
``…-<split>-tta-flip/`` with test-time augmentation). An evaluation replaces its own folder as a
whole (written beside it, then renamed into place), so the files in a folder always come from one
evaluation, and evaluations of other data or splits stay as they were.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from instacli.errors import InstacliError
from instacli.io import atomic_file, write_json

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
SETTINGS = "settings.json"
EPOCH_METRICS = "metrics.jsonl"
CURVES = "curves.png"
CHECKPOINT = "checkpoint"
#: TensorBoard's event files of ``--report-to tensorboard`` (:mod:`instacli.tracking`).
TRACKER_LOGS = "logs"
#: Written last into a checkpoint folder: a checkpoint without it is incomplete.
TRAINER_STATE = "trainer_state.json"

EVAL_DIR = "eval"
METRICS = "metrics.json"
#: Figure files of an evaluation, by the name the report gives them.
FIGURES = {"confusion": "confusion_matrix.png", "reliability": "reliability.png", "likes": "likes.png"}
#: Stands for the split of a plain photo folder, which is evaluated whole.
PLAIN_FOLDER = "folder"

RunState = Literal["finished", "resumable", "partial", "absent"]


def folder_name(text: str) -> str:
    """``text`` (a name made of encoder names) as one plain folder name: a prefixed encoder name
    would be a path elsewhere (``hf:/models/vit`` → ``hf-models-vit``). Plain names stay as they are."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")


def default_out(encoder: str, kind: str = "") -> Path:
    """``runs/<kind><encoder>-<time>``, the output folder when none is given."""
    return Path("runs") / f"{kind}{folder_name(encoder)}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (for display: a damaged file
    is refused where it is loaded to be used, see :func:`instacli.model.load_run`)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_run(path: Path | str) -> bool:
    """Whether ``path`` is a trained run's folder (its config and weights are there)."""
    return (Path(path) / CONFIG).is_file() and (Path(path) / WEIGHTS).is_file()


@dataclass(frozen=True)
class RunFolder:
    """One run folder: where its files are, what state it is in, and its JSON files read leniently."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- state ---------------------------------------------------------------------------------

    @property
    def checkpoint_folders(self) -> tuple[Path, Path, Path]:
        """(the checkpoint, the one being written, the one being replaced)."""
        return self.path / CHECKPOINT, self.path / f"{CHECKPOINT}.tmp", self.path / f"{CHECKPOINT}.old"

    def newest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (its trainer state is written last), if any."""
        final, _, old = self.checkpoint_folders
        return next((folder for folder in (final, old) if (folder / TRAINER_STATE).is_file()), None)

    def state(self) -> RunState:
        """``finished`` (weights + config, no checkpoint), ``resumable`` (a complete checkpoint),
        ``partial`` (anything else in the folder) or ``absent``."""
        if not self.path.exists():
            return "absent"
        if is_run(self.path) and not (self.path / CHECKPOINT).exists():
            return "finished"
        return "resumable" if self.newest_checkpoint() is not None else "partial"

    # -- reading -------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any] | None:
        return read_json(self.path / SETTINGS)

    def config(self) -> dict[str, Any] | None:
        return read_json(self.path / CONFIG)

    def history(self) -> list[dict[str, Any]]:
        """The epoch records of ``metrics.jsonl`` (a line cut by a crash is left out)."""
        path = self.path / EPOCH_METRICS
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    # -- writing (the trainer's main process) ----------------------------------------------------

    def check_usable_as_out(self) -> None:
        """Refuse an ``--out`` that holds something other than a run (the dataset folder, a photo
        folder): training writes its files there and removes a ``metrics.jsonl`` and checkpoints it finds."""
        run = self.path
        if run.exists() and not run.is_dir():
            raise InstacliError(f"--out {run}: is a file, not a run folder; choose a new folder for the run")
        if run.is_dir() and not any((run / name).exists() for name in (SETTINGS, CONFIG)) and any(
            not entry.name.startswith(".") for entry in run.iterdir()
        ):
            raise InstacliError(f"--out {run}: exists and is not an instacli run (no settings.json); choose a new folder for the run")

    def remove_checkpoints(self) -> None:
        for folder in self.checkpoint_folders:
            shutil.rmtree(folder, ignore_errors=True)

    def start(self, settings: dict[str, Any]) -> None:
        """A new (or ``--overwrite``) run: the folder, no leftover checkpoint or metrics, this run's settings."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.remove_checkpoints()  # --overwrite of an interrupted run
        (self.path / EPOCH_METRICS).unlink(missing_ok=True)
        write_json(self.path / SETTINGS, settings)

    def write_history(self, records: list[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` (a resumed run forgets records of an epoch that ran past its checkpoint)."""
        with atomic_file(self.path / EPOCH_METRICS) as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)

    def append_history(self, record: dict[str, Any]) -> None:
        with open(self.path / EPOCH_METRICS, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    # -- evaluations -----------------------------------------------------------------------------

    def evaluation(self, data: Path | str, split: str | None, tta: str = "none") -> Path:
        """The folder of the evaluation on ``split`` of ``data`` (``None``: a plain photo folder);
        one with test-time augmentation has its own (``…-tta-flip``), beside the plain one it is compared with."""
        suffix = "" if tta == "none" else f"-tta-{tta}"
        return self.path / EVAL_DIR / f"{Path(data).resolve().name}-{split or PLAIN_FOLDER}{suffix}"

    def latest_evaluation(self) -> Path | None:
        """The folder of the most recent evaluation (a run folder from before these sub-folders
        has its files directly in ``eval/``); None when never evaluated."""
        found = list((self.path / EVAL_DIR).glob(f"*/{METRICS}")) + list((self.path / EVAL_DIR).glob(METRICS))
        return max(found, key=lambda p: p.stat().st_mtime).parent if found else None


def evaluation_figures(folder: Path) -> dict[str, Path]:
    """The figures an evaluation folder holds, by the report's names for them."""
    return {key: folder / name for key, name in FIGURES.items() if (folder / name).is_file()}


def subset(split: str | None) -> str:
    """What was evaluated, in words: ``test split`` or ``plain folder``."""
    return f"{split} split" if split else "plain folder, every photo"


def evaluation_title(data: Path | str, split: str | None, n: int) -> str:
    """``posts (test split, n=124)``: the data, split and size a figure shows."""
    return f"{Path(data).resolve().name} ({subset(split)}, n={n})"
