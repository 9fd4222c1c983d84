"""A run folder written by instacli 0.1.0 before the redesign of issue 13 (``tests/data/run-v0.1.0``:
a tiny vit-scratch trained on generated photos; its evaluation's figures left out) still loads,
predicts exactly what that version predicted, and renders in a report."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from instacli.prediction import predict_folder
from instacli.report import rerender
from instacli.run_folder import RunFolder
from tests.conftest import make_photo_tree

DATA = Path(__file__).parent / "data"
OLD_RUN = DATA / "run-v0.1.0"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    return Path(shutil.copytree(OLD_RUN, tmp_path / "run"))


def test_an_old_run_folder_predicts_what_its_version_predicted(old_run: Path, tmp_path: Path) -> None:
    assert RunFolder(old_run).state() == "finished" and len(RunFolder(old_run).history()) == 2
    photos = make_photo_tree(tmp_path / "photos", {"animal": 2, "landscape": 2})  # the photos 0.1.0 was asked about
    predict_folder(old_run, photos, tmp_path / "p.csv", workers=0)
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = {r["file"]: r for r in csv.DictReader(handle)}
    expected = json.loads((DATA / "run-v0.1.0-predictions.json").read_text())
    assert len(rows) == len(expected) == 4
    for old in expected:
        new = rows[old["file"]]
        assert new["label"] == old["label"] and new["likes"] == old["likes"]
        for key in ("prob_animal", "prob_landscape"):
            assert float(new[key]) == pytest.approx(float(old[key]), abs=2e-6)


def test_an_old_run_folder_renders_in_a_report(old_run: Path, tmp_path: Path) -> None:
    results, files = rerender(old_run, tmp_path / "report")
    entry = results["runs"][0]
    assert entry["encoder"] == "vit-scratch" and entry["epochs_run"] == 2 and entry["metrics"]["n"] > 0
    assert "vit-scratch + conv1d" in files.html.read_text()
