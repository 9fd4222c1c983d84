"""Outputs get the mode a plain write would give them (the umask applies), not the 0600/0700 of the
temp files and folders they are written through (issue 14, item 7)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from instacli.io import atomic_dir, atomic_file
from tests.conftest import make_photo_tree

TINY_VIT = {"image_size": 32, "patch_size": 8, "width": 16, "heads": 2}


@pytest.fixture
def umask() -> Iterator[callable]:
    """Set the process umask for the test; the previous one comes back after it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def _wrong_modes(root: Path, umask: int) -> dict[str, str]:
    """Every file and folder under ``root`` whose mode differs from a plain write's under ``umask``."""
    wrong = {}
    for path in root.rglob("*"):
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        if stat.S_IMODE(path.stat().st_mode) != expected:
            wrong[str(path.relative_to(root))] = oct(stat.S_IMODE(path.stat().st_mode))
    return wrong


def test_every_output_of_build_train_evaluate_predict_and_compare_is_readable_under_umask_022(tmp_path: Path, umask) -> None:
    from instacli_datasets import build_dataset

    from instacli.compare import compare
    from instacli.report import render_report
    from instacli.evaluation import evaluate
    from instacli.prediction import predict_folder
    from instacli.settings import TrainSettings
    from instacli.training import train

    photos = make_photo_tree(tmp_path / "photos")
    build_dataset(photos, tmp_path / "data", synthetic="seed", seed=1, workers=1)
    run = tmp_path / "run"
    train(TrainSettings(data=tmp_path / "data", out=run, epochs=1, batch_size=8, workers=1, encoder_options=TINY_VIT))
    evaluate(run, tmp_path / "data", workers=0)
    for suffix in ("csv", "jsonl", "parquet"):
        predict_folder(run, photos, tmp_path / f"predictions.{suffix}", workers=0)
    render_report(compare(tmp_path / "data", tmp_path / "report", [], runs=[run], baselines=False).results, tmp_path / "report")
    outputs = {p.relative_to(tmp_path).parts[0] for p in tmp_path.iterdir()}
    assert {"data", "run", "predictions.csv", "predictions.jsonl", "predictions.parquet", "report"} <= outputs
    assert {"model.safetensors", "config.json", "eval"} <= {p.name for p in run.iterdir()}
    assert {"results.json", "report.html"} <= {p.name for p in (tmp_path / "report").iterdir()}
    assert _wrong_modes(tmp_path, 0o022) == {}


def test_a_stricter_umask_is_respected(tmp_path: Path, umask) -> None:
    umask(0o077)
    with atomic_file(tmp_path / "out.json") as handle:
        handle.write("{}")
    with atomic_dir(tmp_path / "folder") as folder:
        (folder / "inside.txt").write_text("x")
    assert _wrong_modes(tmp_path, 0o077) == {}
