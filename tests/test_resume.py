"""Checkpoints and ``--resume``: an interrupted run ends exactly where an uninterrupted one does.

A tiny vit-scratch trains on 40 generated photos (36 ms a step). One test stops a run in-process
(an exception from the progress hook, right after a mid-epoch checkpoint) and compares every
metric of the resumed run with an uninterrupted one; another SIGKILLs a real ``instacli train``
subprocess and resumes it through the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from instacli.errors import InstacliError
from instacli.model import load_run
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import Crash, CrashAt, two_colour_dataset

TINY_VIT = {"image_size": 32, "patch_size": 8, "width": 32, "heads": 2, "drop_path": 0.1}
TINY_FLAGS = ["-E", "image_size=32", "-E", "patch_size=8", "-E", "width=32", "-E", "heads=2"]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_colour_dataset(tmp_path_factory)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTACLI_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(dataset: Path, tmp_path: Path) -> None:
    # 24 train rows / batch 4 = 6 batches, grad-accum 2 → 3 optimizer steps an epoch; checkpoints every 2 steps.
    common = dict(data=dataset, encoder_options=TINY_VIT, epochs=3, batch_size=4, grad_accum=2, checkpoint_every=2,
                  warmup_epochs=1)
    reference = train(TrainSettings(out=tmp_path / "a", **common))
    assert reference.optimizer_steps == 3 * 3
    assert [r["optimizer_steps"] for r in _records(tmp_path / "a")] == [3, 6, 9]
    # the scheduler stepped once per optimizer step (not per micro-batch): the cosine reaches 0 exactly at the end
    # (warm-up ends with epoch 1 at the peak lr, the cosine reaches 0 exactly at the last step)
    assert [r["lr"] for r in _records(tmp_path / "a")] == pytest.approx([2e-3, 1e-3, 0.0], abs=1e-12)

    run = tmp_path / "b"
    with pytest.raises(Crash):  # batch 10 = epoch 2, batch 4: the last checkpoint is mid-epoch (step 4, 2 batches in)
        train(TrainSettings(out=run, **common), CrashAt(10))
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batch"], state["optimizer_steps"]) == (1, 2, 4)
    assert len(_records(run)) == 1
    with pytest.raises(InstacliError, match="--resume"):
        train(TrainSettings(out=run, **common))

    resumed = train(TrainSettings(out=run, resume=True, **common))
    assert resumed.optimizer_steps == reference.optimizer_steps and resumed.epochs_run == 3
    for a, b in zip(_records(tmp_path / "a"), _records(run), strict=True):
        for key in ("epoch", "optimizer_steps", "train_loss", "val_loss", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert not any(p.name.startswith("checkpoint") for p in run.iterdir())  # a finished run keeps no pickles
    load_run(run)


def test_resume_without_checkpoint_is_a_clear_error(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InstacliError, match="nothing to resume"):
        train(TrainSettings(data=dataset, out=tmp_path / "none", resume=True, encoder_options=TINY_VIT, epochs=1))


def test_sigkill_mid_epoch_then_cli_resume(dataset: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "killed"
    epochs = 8
    env = {**os.environ, "INSTACLI_CACHE": os.environ["INSTACLI_CACHE"]}
    command = [sys.executable, "-m", "instacli", "train", "--data", str(dataset), "--out", str(run), "--epochs", str(epochs),
               "--batch-size", "4", "--checkpoint-every", "2", "--quiet", *TINY_FLAGS]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state_file = run / "checkpoint" / "trainer_state.json"
    try:
        deadline = time.monotonic() + 120
        while not state_file.is_file():  # the first checkpoint is mid-epoch (step 2 of 6)
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert json.loads(state_file.read_text())["epoch"] < epochs

    result = run_cli("train", "--resume", "--out", str(run), "--quiet")  # data, epochs, … come from the run's settings.json
    assert result.code == 0, result.stderr
    records = _records(run)
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    assert records[-1]["optimizer_steps"] == epochs * 6  # as an uninterrupted run: 24 rows / 4 per batch
    assert not any(p.name.startswith("checkpoint") for p in run.iterdir())
    assert not list(run.rglob("*.pkl")) and not list(run.rglob("*.bin"))
    loaded = load_run(run)
    assert loaded.config.encoder_options["width"] == 32


def test_patience_counts_from_the_second_half_of_the_schedule() -> None:
    from instacli.training import stale_epochs

    bad = 0
    for epoch in range(1, 16):  # epochs 1-15 of 30: no improvement, nothing counted
        bad = stale_epochs(bad, improved=False, epoch=epoch, epochs=30)
    assert bad == 0
    for epoch in range(16, 26):
        bad = stale_epochs(bad, improved=False, epoch=epoch, epochs=30)
    assert bad == 10  # patience 10 stops after epoch 25 at the earliest
    assert stale_epochs(bad, improved=True, epoch=26, epochs=30) == 0


def test_should_stop_ends_the_run_at_the_best_finished_epoch_or_raises_before_the_first(dataset: Path, tmp_path: Path) -> None:
    """``train(should_stop=…)`` (what compare stops a too-slow run with) is asked after every batch: after
    an epoch has finished, the run ends there as a normal run; before, there is no model and it raises."""
    from instacli.run_folder import RunFolder
    from instacli.training import TrainingStopped

    settings = dict(data=dataset, epochs=5, batch_size=8, workers=1, encoder_options=TINY_VIT)
    asked: list[int] = []

    def after_first_epoch() -> bool:
        asked.append(1)
        return len(RunFolder(tmp_path / "a").history()) >= 1

    result = train(TrainSettings(out=tmp_path / "a", **settings), should_stop=after_first_epoch)
    assert result.epochs_run == 1 and [r["epoch"] for r in _records(tmp_path / "a")] == [1]
    assert RunFolder(tmp_path / "a").state() == "finished" and len(asked) > 1  # asked after every batch
    with pytest.raises(TrainingStopped) as info:
        train(TrainSettings(out=tmp_path / "b", **settings), should_stop=lambda: True)
    assert info.value.images_seen == 8 and not (tmp_path / "b" / "model.safetensors").exists()
