"""The resume checkpoint of an unfinished run: accelerate's state plus the trainer's own.

``accelerate.save_state`` holds the model, optimizer, scheduler and every process's RNG;
``trainer_state.json`` (:class:`TrainerState`) the position in the schedule, early stopping and the
counters. A finished run deletes its checkpoint: accelerate's files are pickles, and a finished run
keeps only safetensors and JSON (:mod:`instacli.run_folder`).
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from typing import Annotated, Any

from accelerate import Accelerator
from pydantic import Field, NonNegativeFloat, NonNegativeInt, TypeAdapter, ValidationError
from safetensors import SafetensorError
from typing_extensions import TypedDict  # pydantic validates typing's TypedDict from Python 3.12 only

from instacli.errors import InstacliError, exception_line, invalid_file
from instacli.io import write_json
from instacli.run_folder import TRAINER_STATE, RunFolder


class TrainerState(TypedDict):
    """Everything besides accelerate's state that a resumed run needs: position, early stopping,
    counters. Typed so that a damaged ``trainer_state.json`` is refused on ``--resume`` (pydantic)."""

    epoch: NonNegativeInt
    batch: NonNegativeInt
    best_val: float
    best_epoch: NonNegativeInt
    bad_epochs: NonNegativeInt
    optimizer_steps: NonNegativeInt
    images_seen: NonNegativeInt
    seconds: NonNegativeFloat
    sums: Annotated[list[float], Field(min_length=3, max_length=3)]
    steps: NonNegativeInt
    epoch_seconds: NonNegativeFloat
    history: list[dict[str, Any]]


_TRAINER_STATE = TypeAdapter(TrainerState)


def new_trainer_state() -> TrainerState:
    """The state of a run that has not trained yet."""
    return {
        "epoch": 0,  # last finished epoch
        "batch": 0,  # batches of the next epoch already trained (a mid-epoch checkpoint)
        "best_val": float("inf"), "best_epoch": 0, "bad_epochs": 0,
        "optimizer_steps": 0, "images_seen": 0, "seconds": 0.0,
        "sums": [0.0, 0.0, 0.0], "steps": 0, "epoch_seconds": 0.0,  # the unfinished epoch's running loss
        "history": [],  # one record per finished epoch, as in metrics.jsonl
    }


def load_checkpoint(accelerator: Accelerator, run: RunFolder) -> TrainerState:
    """Restore the newest checkpoint of ``run`` into ``accelerator``'s objects and return its trainer state.

    Any file of it that is truncated, empty, replaced (a pickle that ``weights_only`` refuses) or
    missing is a one-line error: the checkpoint cannot be trusted, the run has to start over.
    """
    found = run.newest_checkpoint()
    if found is None:
        raise InstacliError(f"{run.path}: nothing to resume (no checkpoint/{TRAINER_STATE}); start a new run instead")
    try:
        state = _TRAINER_STATE.validate_json((found / TRAINER_STATE).read_bytes())
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            accelerator.load_state(str(found))  # weights, optimizer, scheduler, RNG of every process
    except ValidationError as exc:
        raise invalid_file(found / TRAINER_STATE, exc, "start the run over with --overwrite") from None
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: code execution, never for us
        raise InstacliError(f"{found}: a checkpoint file holds more than tensors (refused, not run); start the run over with --overwrite") from None
    except (SafetensorError, RuntimeError, EOFError, KeyError, OSError) as exc:  # torch's messages run to 15 lines
        raise InstacliError(f"{found}: damaged checkpoint ({exception_line(exc)}); start the run over with --overwrite") from None
    return state


def save_checkpoint(accelerator: Accelerator, run: RunFolder, state: TrainerState) -> None:
    """``accelerate.save_state`` (model, optimizer, scheduler, every process's RNG) + ``trainer_state.json``.

    Written to ``checkpoint.tmp`` and swapped in by renames, so that a kill at any moment leaves a
    complete checkpoint behind (``checkpoint`` or, during the swap, ``checkpoint.old``).
    """
    final, tmp, old = run.checkpoint_folders
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / TRAINER_STATE, state)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
