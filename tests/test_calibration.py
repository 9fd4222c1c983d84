"""Calibrated confidence and the unfamiliar-photo flag (instacli.calibration and its hooks)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from instacli.calibration import TEMPERATURE_RANGE, expected_calibration_error, fit_temperature, probabilities
from instacli.evaluation import evaluate, predict_split
from instacli.model import load_run
from instacli.prediction import predict_folder
from instacli.settings import TrainSettings
from instacli.split_arrays import load_split_arrays
from instacli.training import train
from tests.test_pipeline import TINY_VIT, dataset, learnable_tree, trained  # noqa: F401 (session fixtures, trained once)


def test_ece_of_a_known_toy_case() -> None:
    """Ten rows at 0.9 with 8 right (gap 0.1) and ten at 0.6 with 6 right (gap 0): ECE = 0.05."""
    probs = np.array([[0.9, 0.1]] * 10 + [[0.4, 0.6]] * 10)
    labels = np.array([0] * 8 + [1] * 2 + [1] * 6 + [0] * 4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.05)
    assert expected_calibration_error(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2])) == 0.0  # sure and right


def test_fit_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (20000, 4))
    labels = np.array([rng.choice(4, p=p) for p in probabilities(true_logits)])
    assert fit_temperature(true_logits * 2.5, labels) == pytest.approx(2.5, rel=0.05)  # overconfident by 2.5x
    assert fit_temperature(true_logits / 2, labels) == pytest.approx(0.5, rel=0.05)
    overconfident = probabilities(true_logits * 2.5)
    assert expected_calibration_error(overconfident, labels) > 0.1
    assert expected_calibration_error(probabilities(true_logits * 2.5, 2.5), labels) < 0.02


def _calibration_fields(run: Path) -> tuple[float, float]:
    config = json.loads((run / "config.json").read_text())
    return config["temperature"], config["unfamiliar_threshold"]


def test_trained_runs_store_temperature_and_threshold(trained: Path, dataset: Path, tmp_path: Path) -> None:  # noqa: F811
    temperature, threshold = _calibration_fields(trained)
    assert TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1] and isinstance(threshold, float)
    # the validation split it was fitted on: 95 % of its photos at or below the threshold
    run = load_run(trained)
    scores = predict_split(run, load_split_arrays(dataset, "validation", settings=None, scaler=run.scaler, task=run.config.task))["unfamiliarity"]
    assert np.mean(scores > threshold) <= 0.1
    # a frozen category-only run is fitted directly (no epochs): calibrated too
    train(TrainSettings(data=dataset, out=tmp_path / "direct", encoder_options=TINY_VIT, freeze_encoder=True, task="category"))
    temperature, threshold = _calibration_fields(tmp_path / "direct")
    assert TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1] and isinstance(threshold, float)


def test_evaluate_reports_ece_before_and_after_and_draws_reliability(trained: Path, dataset: Path) -> None:  # noqa: F811
    result = evaluate(trained, dataset, split="validation")
    assert 0 <= result["ece"] <= 1 and 0 <= result["ece_uncalibrated"] <= 1
    assert result["ece"] <= result["ece_uncalibrated"] + 1e-9  # T minimizes the NLL of these very photos
    assert result["temperature"] == _calibration_fields(trained)[0]
    assert result["unfamiliar_share"] <= 0.1
    assert (Path(result["outputs"]) / "reliability.png").is_file()


def _read(out: Path) -> list[dict]:
    if out.suffix == ".csv":
        return list(csv.DictReader(out.open()))
    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    return pq.read_table(out).to_pylist()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_predict_writes_confidence_and_unfamiliar(trained: Path, learnable_tree: Path, tmp_path: Path, suffix: str) -> None:  # noqa: F811
    folder = tmp_path / "in"
    shutil.copytree(learnable_tree / "animal", folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    summary = predict_folder(trained, folder, tmp_path / f"p{suffix}", workers=0)
    rows = {r["file"]: r for r in _read(summary.out)}
    assert rows["broken.jpg"]["confidence"] in (None, "") and rows["broken.jpg"]["unfamiliar"] in (None, "")
    good = [r for name, r in rows.items() if name != "broken.jpg"]
    assert len(good) == 30
    for r in good:
        probs = [float(r["prob_animal"]), float(r["prob_landscape"])]
        assert float(r["confidence"]) == pytest.approx(max(probs), abs=1e-6) and float(r["confidence"]) >= 0.5
        if suffix == ".csv":
            assert r["unfamiliar"] in ("True", "False")
        else:
            assert isinstance(r["confidence"], float) and isinstance(r["unfamiliar"], bool)
    flagged = sum(str(r["unfamiliar"]) == "True" for r in good)
    assert flagged <= 6 and summary.unfamiliar == flagged  # training-like photos are rarely flagged; the summary counts them


def test_unlike_photos_score_higher_than_training_like_ones(trained: Path, learnable_tree: Path, tmp_path: Path) -> None:  # noqa: F811
    rng = np.random.default_rng(1)
    strange = tmp_path / "strange" / "animal"
    strange.mkdir(parents=True)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(strange / f"noise_{i}.png")
        Image.new("RGB", (48, 40), ((i * 53) % 256, (i * 97) % 256, (i * 31) % 256)).save(strange / f"solid_{i}.png")
    run = load_run(trained)

    def scores(folder: Path) -> np.ndarray:
        split = load_split_arrays(folder, "test", settings=None, scaler=run.scaler, task=run.config.task)
        return predict_split(run, split)["unfamiliarity"]

    familiar, unfamiliar = scores(learnable_tree), scores(tmp_path / "strange")
    assert np.median(unfamiliar) > np.median(familiar)
    assert np.mean(unfamiliar > run.config.unfamiliar_threshold) > np.mean(familiar > run.config.unfamiliar_threshold) + 0.3

    summary = predict_folder(trained, tmp_path / "strange", tmp_path / "strange.jsonl", workers=0)
    flagged = sum(r["unfamiliar"] is True for r in _read(summary.out))
    assert summary.unfamiliar == flagged >= 6  # the summary (and the CLI's line) counts the flagged photos


def test_runs_from_before_calibration_still_predict(trained: Path, learnable_tree: Path, tmp_path: Path) -> None:  # noqa: F811
    old = tmp_path / "old"
    shutil.copytree(trained, old, ignore=shutil.ignore_patterns("eval"))
    config = json.loads((old / "config.json").read_text())
    del config["temperature"], config["unfamiliar_threshold"]
    (old / "config.json").write_text(json.dumps(config))
    assert load_run(old).config.temperature == 1.0
    rows = _read(predict_folder(old, learnable_tree, tmp_path / "p.jsonl", workers=0).out)
    assert len(rows) == 60 and all(r["unfamiliar"] is None and 0.5 <= r["confidence"] <= 1 for r in rows)
    new = {r["file"]: r for r in _read(predict_folder(trained, learnable_tree, tmp_path / "q.jsonl", workers=0).out)}
    assert all(r["label"] == new[r["file"]]["label"] for r in rows)  # the temperature never changes the label


def test_a_validation_split_without_mistakes_leaves_the_temperature_alone() -> None:
    """All-correct validation has no finite best temperature: the demo's fit went to T = 0.048 and
    every probability printed as 1.0. Nothing to learn from → 1.0; otherwise within the bounds."""
    logits = np.array([[4.0, 0.0], [0.0, 3.0], [5.0, 1.0]])
    assert fit_temperature(logits, np.array([0, 1, 0])) == 1.0
    confident_and_wrong = np.array([[40.0, 0.0], [0.0, 30.0], [50.0, 10.0], [45.0, 0.0]])
    assert fit_temperature(confident_and_wrong, np.array([0, 1, 0, 1])) == TEMPERATURE_RANGE[1]
