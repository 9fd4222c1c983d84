"""Test-time augmentation and ensembles (instacli.ensemble) through predict and evaluate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from instacli.augment import eval_view
from instacli.calibration import probabilities, unfamiliarity
from instacli.ensemble import combine
from instacli.errors import InstacliError
from instacli.evaluation import evaluate, predict_split
from instacli.photo_files import decode_square
from instacli.model import load_run
from instacli.prediction import predict_folder
from instacli.settings import TrainSettings
from instacli.split_arrays import load_split_arrays
from instacli.training import train
from tests.test_pipeline import TINY_VIT, dataset, learnable_tree, trained  # noqa: F401 (session fixtures, trained once)


def _rows(path: Path) -> dict[str, dict]:
    return {r["file"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def other_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A second, different run of the same categories, reading the photos at another size (40 px crops of 46 px squares)."""
    run = tmp_path_factory.mktemp("runs") / "other"
    train(TrainSettings(data=dataset, out=run, encoder_options={**TINY_VIT, "image_size": 40}, epochs=3, batch_size=16, lr=3e-3,
                        warmup_epochs=1, seed=7))
    return run


@pytest.fixture(scope="module")
def photos(learnable_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    folder = tmp_path_factory.mktemp("incoming")
    for f in sorted((learnable_tree / "animal").iterdir())[:4] + sorted((learnable_tree / "landscape").iterdir())[:4]:
        shutil.copy(f, folder / f.name)
    return folder


def test_combine_averages_probabilities_and_likes_in_log_space() -> None:
    runs = [SimpleNamespace(config=SimpleNamespace(unfamiliar_threshold=t)) for t in (-2.5, -1.0)]
    members = [
        {"probs": np.array([[0.9, 0.1], [0.2, 0.8]]), "unfamiliarity": np.array([-3.0, 0.0]), "log_likes": np.log1p([99.0, 0.0])},
        {"probs": np.array([[0.5, 0.5], [0.4, 0.6]]), "unfamiliarity": np.array([-1.0, -1.0]), "log_likes": np.log1p([9999.0, 0.0])},
    ]
    answer = combine(members, runs)
    assert np.allclose(answer["probs"], [[0.7, 0.3], [0.3, 0.7]])
    assert np.allclose(answer["likes"], [999.0, 0.0])  # geometric mean of 100 and 10,000, minus 1 (not 5,049)
    assert answer["unfamiliar"].tolist() == [False, True]  # mean score -2.0 and -0.5 against the mean threshold -1.75
    runs[1].config.unfamiliar_threshold = None  # a run from before calibration: no flag at all
    assert combine(members, runs)["unfamiliar"] is None


def test_one_view_of_one_run_is_exactly_the_run_alone(trained: Path, photos: Path, tmp_path: Path) -> None:  # noqa: F811
    """The refactored path still answers what the run's network says of the eval view."""
    rows = _rows(predict_folder(trained, photos, tmp_path / "p.jsonl", workers=0, tta="none").out)
    run = load_run(trained)
    files = sorted(photos.iterdir())
    images = torch.stack([torch.from_numpy(decode_square(f, run.preprocess.resize_size)) for f in files])
    features = torch.from_numpy(run.scaler.transform({}, len(files))[0])
    with torch.inference_mode():
        logits, likes_z = run.model(eval_view(images, run.preprocess), features)
    probs, scores = probabilities(logits, run.config.temperature), unfamiliarity(logits, run.config.temperature)
    likes = run.scaler.decode_target(likes_z.numpy())
    for k, f in enumerate(files):
        row = rows[f.name]
        assert row["prob_animal"] == round(float(probs[k, 0]), 6) and row["confidence"] == round(float(probs[k].max()), 6)
        assert row["unfamiliar"] == bool(scores[k] > run.config.unfamiliar_threshold)
        assert row["likes"] == round(float(likes[k]))


def test_flip_of_mirror_symmetric_photos_changes_nothing(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    """Photos whose every row is one colour look the same mirrored: their flip TTA is their plain answer."""
    folder = tmp_path / "symmetric"
    folder.mkdir()
    for i in range(4):
        column = np.random.default_rng(i).integers(0, 256, (40, 1, 3), dtype=np.uint8)
        Image.fromarray(np.repeat(column, 48, axis=1)).save(folder / f"bands_{i}.png")
    plain = _rows(predict_folder(trained, folder, tmp_path / "plain.jsonl", workers=0).out)
    flipped = _rows(predict_folder(trained, folder, tmp_path / "flip.jsonl", workers=0, tta="flip").out)
    assert flipped == plain


def test_flip_tta_of_a_frozen_run_averages_the_mirrored_pixels(dataset: Path, tmp_path: Path) -> None:  # noqa: F811
    """A frozen encoder caches its embeddings of the eval view in training; TTA must run it on each view's pixels."""
    train(TrainSettings(data=dataset, out=tmp_path / "frozen", encoder_options=TINY_VIT, freeze_encoder=True, task="category"))
    run = load_run(tmp_path / "frozen")
    arrays = load_split_arrays(dataset, "test", settings=None, scaler=run.scaler, task=run.config.task)
    pixels = eval_view(arrays.images(run.preprocess.resize_size), run.preprocess)
    with torch.inference_mode():
        plain = probabilities(run.model(pixels, arrays.features)[0], run.config.temperature)
        mirrored = probabilities(run.model(pixels.flip(-1), arrays.features)[0], run.config.temperature)
    tta = predict_split(run, arrays, tta="flip")["probs"]
    assert np.allclose(tta, (plain + mirrored) / 2, atol=1e-6)
    assert not np.allclose(tta, plain, atol=1e-4)  # the mirrored view did reach the encoder
    assert np.allclose(predict_split(run, arrays)["probs"], plain, atol=1e-6)


def test_an_ensemble_of_a_run_with_itself_is_the_run(trained: Path, photos: Path, tmp_path: Path, run_cli) -> None:  # noqa: F811
    alone = _rows(predict_folder(trained, photos, tmp_path / "alone.jsonl", workers=0).out)
    result = run_cli("predict", trained, trained, photos, "--out", tmp_path / "twice.jsonl", "--workers", "0")
    assert result.code == 0, result.stderr
    assert _rows(tmp_path / "twice.jsonl") == alone


def test_an_ensemble_of_two_runs_averages_their_answers(trained: Path, other_run: Path, photos: Path, dataset: Path, tmp_path: Path) -> None:  # noqa: F811
    a = _rows(predict_folder(trained, photos, tmp_path / "a.jsonl", workers=0).out)
    b = _rows(predict_folder(other_run, photos, tmp_path / "b.jsonl", workers=0).out)
    both = _rows(predict_folder([trained, other_run], photos, tmp_path / "ab.jsonl", workers=0).out)
    assert any(abs(a[f]["prob_animal"] - b[f]["prob_animal"]) > 0.01 for f in a)  # two runs that do differ
    for f, row in both.items():
        mean = {c: (a[f][f"prob_{c}"] + b[f][f"prob_{c}"]) / 2 for c in ("animal", "landscape")}
        assert row["prob_animal"] == pytest.approx(mean["animal"], abs=2e-6)
        assert row["label"] == max(mean, key=mean.get) and row["confidence"] == pytest.approx(max(mean.values()), abs=2e-6)
        geometric = np.sqrt((a[f]["likes"] + 1) * (b[f]["likes"] + 1)) - 1  # the mean in log1p space
        assert row["likes"] == pytest.approx(geometric, rel=1e-3, abs=1)
    # evaluate: the same averaging, written where --out says (an ensemble's evaluation belongs to no run)
    with pytest.raises(InstacliError, match="--out"):
        evaluate([trained, other_run], dataset)
    before = sorted((trained / "eval").rglob("*")) if (trained / "eval").exists() else []
    result = evaluate([trained, other_run], dataset, out=tmp_path / "eval")
    assert result["run"] == [str(trained), str(other_run)] and json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == result["n"]
    assert (sorted((trained / "eval").rglob("*")) if (trained / "eval").exists() else []) == before
    with pytest.raises(InstacliError, match="already exists"):
        evaluate([trained, other_run], dataset, out=tmp_path / "eval")


def test_runs_of_other_categories_are_refused_in_one_line(trained: Path, photos: Path, dataset: Path, tmp_path: Path, run_cli) -> None:  # noqa: F811
    swapped = tmp_path / "swapped"
    shutil.copytree(trained, swapped)
    config = json.loads((swapped / "config.json").read_text())
    config["class_names"] = config["class_names"][::-1]
    (swapped / "config.json").write_text(json.dumps(config))
    for args in (["predict", trained, swapped, photos, "--out", tmp_path / "p.csv"],
                 ["evaluate", trained, swapped, "--data", dataset, "--out", tmp_path / "eval"]):
        result = run_cli(*args)
        assert result.code == 2 and "Traceback" not in result.stderr
        line = " ".join(result.stderr.split())
        assert f"{trained} and {swapped} cannot be averaged: class_names ['animal', 'landscape'] vs ['landscape', 'animal']" in line
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "eval").exists()


def test_cli_tta_flags(trained: Path, photos: Path, dataset: Path, tmp_path: Path, run_cli) -> None:  # noqa: F811
    result = run_cli("predict", trained, photos, "--tta", "--out", tmp_path / "p.jsonl", "--workers", "0")
    assert result.code == 0, result.stderr
    flip = _rows(predict_folder(trained, photos, tmp_path / "q.jsonl", workers=0, tta="flip").out)
    assert _rows(tmp_path / "p.jsonl") == flip != _rows(predict_folder(trained, photos, tmp_path / "r.jsonl", workers=0).out)
    result = run_cli("evaluate", trained, "--data", dataset, "--tta", "--json")
    assert result.code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["tta"] == "flip" and Path(metrics["outputs"]) == trained / "eval" / f"{dataset.name}-test-tta-flip"
    assert run_cli("predict", trained).code == 2  # a run and no photos
    result = run_cli("predict", trained, trained, "--out", tmp_path / "s.csv")  # two runs and no photos: not the run's plots scored
    assert result.code == 2 and "is a trained run, not photos" in " ".join(result.stderr.split()) and not (tmp_path / "s.csv").exists()
