"""Every built-in encoder and every regressor goes through ``instacli train`` → ``evaluate`` → ``predict``.

Tiny sizes and one epoch: this checks the plumbing each model needs (its preprocessing, its saved
options, reloading the run for evaluation and prediction), not what it learns.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import every_encoder, photo_dataset, tiny_options

from instacli import registry

#: Every registered encoder and prefix example with the default regressor, and every regressor with the tiny ViT.
CASES = [(encoder, "conv1d") for encoder in every_encoder()] + [
    ("vit-scratch", r) for r in registry.regressors.names() if r != "conv1d"
]


def tiny_flags(encoder: str) -> list[str]:
    return [arg for key, value in tiny_options(encoder).items() for arg in ("-E", f"{key}={value}")]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(photos, the dataset built from them)."""
    return photo_dataset(tmp_path_factory, {"animal": 8, "landscape": 8})


@pytest.mark.parametrize(("encoder", "regressor"), CASES)
def test_train_evaluate_predict(encoder: str, regressor: str, data: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    photos, dataset = data
    run = tmp_path / "run"
    result = run_cli("train", "--data", dataset, "--out", run, "--encoder", encoder, "--regressor", regressor,
                     "--epochs", "1", "--batch-size", "4", "--quiet", *tiny_flags(encoder))
    assert result.code == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert (config["encoder"], config["regressor"]) == (encoder, regressor)

    result = run_cli("evaluate", run, "--data", dataset, "--json")
    assert result.code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 4 and 0 <= metrics["accuracy"] <= 1 and metrics["likes_mae"] > 0

    out = tmp_path / "preds.csv"
    result = run_cli("predict", run, photos, "--out", out, "--workers", "0")
    assert result.code == 0, result.stderr
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16 and not any(r["error"] for r in rows)
    assert all(float(r["likes"]) > 0 and abs(float(r["prob_animal"]) + float(r["prob_landscape"]) - 1) < 1e-4 for r in rows)
