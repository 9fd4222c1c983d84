"""End to end on generated photos: build → train a tiny vit-scratch → evaluate → predict, through the CLI too."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from instacli.errors import InstacliError
from instacli.evaluation import evaluate
from instacli.model import load_run
from instacli.prediction import predict_folder
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import TINY_VIT



def learnable_photo(path: Path, category: str, rng: np.random.Generator) -> None:
    """Landscapes are blue-over-green bands, animals a brown blob on grey: separable by a tiny model."""
    h, w = 40, 48
    if category == "landscape":
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2] = (90, 150, 230)
        img[h // 2 :] = (60, 160, 70)
    else:
        img = np.full((h, w, 3), 128, np.uint8)
        img[10:30, 14:34] = (120, 70, 30)
    noise = rng.integers(-25, 25, img.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="session")
def learnable_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for category in ("animal", "landscape"):
        for i in range(30):
            learnable_photo(root / category / f"{category}_{i:02d}.png", category, rng)
    return root


@pytest.fixture(scope="session")
def dataset(learnable_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli_datasets import build_dataset

    out = tmp_path_factory.mktemp("data") / "ds"
    build_dataset(learnable_tree, out, synthetic="seed", seed=1, val_fraction=0.2, test_fraction=0.2)
    return out


@pytest.fixture(scope="session")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    settings = TrainSettings(data=dataset, out=run, encoder_options=TINY_VIT, epochs=8, batch_size=16, lr=3e-3, warmup_epochs=1)
    result = train(settings)
    assert result.epochs_run == 8
    return run


def test_run_folder_holds_weights_config_metrics_and_curves(trained: Path) -> None:
    assert {"model.safetensors", "config.json", "metrics.jsonl", "curves.png"} <= {p.name for p in trained.iterdir()}
    assert not list(trained.rglob("*.pkl")) and not list(trained.rglob("*.bin"))
    config = json.loads((trained / "config.json").read_text())
    assert config["encoder"] == "vit-scratch" and config["class_names"] == ["animal", "landscape"]
    assert config["scaler"]["features"] == ["comments", "shares"]
    assert config["encoder_options"]["width"] == 32
    assert config["class_to_regressor"] is True  # the regressor reads comments, shares, p(animal), p(landscape)
    assert load_run(trained).model.regressor.fusion.num_features == 4
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 9))
    assert records[-1]["train_loss"] < records[0]["train_loss"]


def test_evaluate_reports_every_metric_and_learns(trained: Path, dataset: Path) -> None:
    result = evaluate(trained, dataset, split="test")
    for key in ("accuracy", "f1_macro", "confusion_matrix", "n", "likes_mae", "likes_rmse", "likes_r2", "likes_spearman", "log_likes_mae"):
        assert key in result
    assert result["n"] == 12
    assert result["accuracy"] >= 0.9
    assert np.sum(result["confusion_matrix"]) == 12
    assert (trained / "eval" / f"{dataset.name}-test" / "confusion_matrix.png").is_file()
    # likes predictions are on the scale of real likes (thousands to a million), not a constant
    assert 1e3 < result["likes_mae"] < 1e6


def test_evaluate_accepts_a_plain_class_folder(trained: Path, learnable_tree: Path) -> None:
    result = evaluate(trained, learnable_tree)
    assert result["n"] == 60 and result["likes_mae"] is None and result["accuracy"] >= 0.9


def test_each_evaluation_writes_its_own_complete_folder(
    trained: Path, dataset: Path, learnable_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:
    """RUN/eval/ used to mix evaluations (a new metrics.json beside the previous split's likes.png),
    with no title naming the data, and a plain folder labelled 'test'."""
    import shutil

    from instacli import evaluation

    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("eval"))
    titles: list[str] = []
    for name in ("plot_confusion", "plot_likes"):
        draw = getattr(evaluation, name)
        monkeypatch.setattr(evaluation, name, lambda *a, draw=draw: (titles.append(a[-1]), draw(*a))[1])
    evaluate(run, dataset, split="test")
    evaluate(run, dataset, split="validation")
    evaluate(run, learnable_tree)
    folders = {p.name: p for p in (run / "eval").iterdir()}
    assert set(folders) == {f"{dataset.name}-test", f"{dataset.name}-validation", f"{learnable_tree.name}-folder"}
    for split, n in (("test", 12), ("validation", 12)):
        folder = folders[f"{dataset.name}-{split}"]
        assert {p.name for p in folder.iterdir()} == {"metrics.json", "confusion_matrix.png", "reliability.png", "likes.png"}
        assert json.loads((folder / "metrics.json").read_text())["split"] == split
        assert f"Predicted vs actual likes\n{dataset.name} ({split} split, n={n})" in titles
    plain = folders[f"{learnable_tree.name}-folder"]
    assert {p.name for p in plain.iterdir()} == {"metrics.json", "confusion_matrix.png", "reliability.png"}  # no likes in a plain folder
    assert json.loads((plain / "metrics.json").read_text())["split"] is None
    assert titles[-1] == f"Confusion matrix\n{learnable_tree.name} (plain folder, every photo, n=60)"

    # an evaluation that fails half-way leaves the previous one of that data and split whole
    before = {p.name: p.read_bytes() for p in folders[f"{dataset.name}-test"].iterdir()}
    monkeypatch.setattr(evaluation, "plot_likes", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(evaluation.EvaluationNotSaved, match="disk full") as failed:  # the metrics come with the error
        evaluate(run, dataset, split="test")
    assert failed.value.result["n"] == 12 and failed.value.result["outputs"] is None
    assert {p.name: p.read_bytes() for p in folders[f"{dataset.name}-test"].iterdir()} == before
    assert {p.name for p in (run / "eval").iterdir()} == set(folders)  # no temporary folder left behind

    result = run_cli("evaluate", run, "--data", learnable_tree)
    assert result.code == 0 and "plain folder" in result.stdout and "(test" not in result.stdout


def test_evaluate_the_holdout_split_of_a_leave_groups_out_dataset(trained: Path, learnable_tree: Path, tmp_path: Path, run_cli) -> None:
    from instacli_datasets import build_dataset

    data = tmp_path / "shift"  # the tens digit of animal_23.png is its "source"; sources 0 and 2 are held out
    build_dataset(learnable_tree, data, synthetic="seed", group_pattern=r"_(\d)\d\.png$", holdout=["0", "2"], workers=1)
    result = run_cli("evaluate", trained, "--data", data, "--split", "holdout", "--json")
    assert result.code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["split"] == "holdout" and metrics["n"] == 40 and np.sum(metrics["confusion_matrix"]) == 40
    by_source = metrics["accuracy_by_group"]
    assert metrics["group_column"] == "source" and list(by_source) == ["0", "2"] and [g["n"] for g in by_source.values()] == [20, 20]
    assert np.mean([g["accuracy"] for g in by_source.values()]) == pytest.approx(metrics["accuracy"])
    shown = run_cli("evaluate", trained, "--data", data, "--split", "holdout")
    assert shown.code == 0 and "Accuracy per source" in shown.stdout
    assert "accuracy_by_group" not in evaluate(trained, learnable_tree), "a plain folder has no groups"


def test_loaded_run_reproduces_training_predictions(trained: Path) -> None:
    import torch

    run = load_run(trained)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        a, _ = run.model(x, torch.zeros(2, 2))
        b, _ = load_run(trained).model(x, torch.zeros(2, 2))
    assert torch.allclose(a, b)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_predict_scores_folder_and_reports_bad_files(trained: Path, learnable_tree: Path, tmp_path: Path, suffix: str) -> None:
    folder = tmp_path / "incoming"
    for f in list((learnable_tree / "animal").iterdir())[:3] + list((learnable_tree / "landscape").iterdir())[:3]:
        (folder / "nested").mkdir(parents=True, exist_ok=True)
        (folder / "nested" / f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / f"preds{suffix}"
    summary = predict_folder(trained, folder, out, workers=0)
    assert (summary.scored, summary.failed, summary.from_defaults) == (6, 1, 6)
    if suffix == ".csv":
        rows = list(csv.DictReader(out.open()))
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        rows = pq.read_table(out).to_pylist()
    assert len(rows) == 7
    by_file = {r["file"]: r for r in rows}
    assert by_file["broken.jpg"]["error"]
    good = [r for r in rows if not r["error"]]
    assert {r["label"] for r in good} <= {"animal", "landscape"}
    assert sum(r["label"] == r["file"].split("/")[-1].split("_")[0] for r in good) >= 5
    assert all(abs(float(r["prob_animal"]) + float(r["prob_landscape"]) - 1) < 1e-4 for r in good)
    assert all(float(r["likes"]) > 0 for r in good)
    # likes are whole counts (were 77852.6953125), probabilities have 6 decimals (were 16)
    assert all(str(r["likes"]).isdigit() for r in good), [r["likes"] for r in good]
    assert all(suffix == ".csv" or isinstance(r["likes"], int) for r in good)
    assert all(float(r[f"prob_{c}"]) == round(float(r[f"prob_{c}"]), 6) for r in good for c in ("animal", "landscape"))
    with pytest.raises(InstacliError, match="already exists"):
        predict_folder(trained, folder, out, workers=0)


def test_predict_uses_metadata_numbers(trained: Path, learnable_tree: Path, tmp_path: Path) -> None:
    folder = learnable_tree / "animal"
    table = tmp_path / "meta.csv"
    names = sorted(p.name for p in folder.iterdir())
    table.write_text("file_name,comments,shares\n" + "".join(f"{n},5,50\n" for n in names[:2]))
    summary = predict_folder(trained, folder, tmp_path / "p.jsonl", metadata=table, workers=0)
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert summary.from_defaults == len(names) - 2
    assert [r["likes_from_defaults"] for r in rows[:2]] == [False, False]
    bad = tmp_path / "bad.csv"
    bad.write_text("file_name,comments\nx.png,3\n")
    with pytest.raises(InstacliError, match="shares"):
        predict_folder(trained, folder, tmp_path / "q.csv", metadata=bad, workers=0)


def test_existing_run_is_never_overwritten_silently(trained: Path, dataset: Path) -> None:
    with pytest.raises(InstacliError, match="--overwrite"):
        train(TrainSettings(data=dataset, out=trained, encoder_options=TINY_VIT, epochs=1))


def test_cli_train_evaluate_predict(dataset: Path, learnable_tree: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "cli-run"
    result = run_cli("train", "--data", str(dataset), "--out", str(run), "--epochs", "1", "--batch-size", "16",
                 "-E", "image_size=32", "-E", "width=32", "-E", "heads=2", "--quiet")
    assert result.code == 0, result.stderr
    result = run_cli("evaluate", str(run), "--data", str(dataset), "--json")
    assert result.code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 12 and 0 <= metrics["accuracy"] <= 1
    out = tmp_path / "p.csv"
    result = run_cli("predict", str(run), str(learnable_tree), "--out", str(out), "--workers", "0")
    assert result.code == 0, result.stderr
    assert len(out.read_text().splitlines()) == 61
    assert result.stdout.count("training medians") == 1, result.stdout  # one fallback, said once


def test_cli_errors_are_one_line(tmp_path: Path, dataset: Path, run_cli) -> None:
    result = run_cli("evaluate", tmp_path / "nope", "--data", tmp_path)
    assert result.code == 2
    assert "not a trained run" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("train", "--data", dataset, "--out", tmp_path / "r", "-E", "bogus=1", "--quiet")
    assert result.code == 2 and "no option 'bogus'" in result.stderr and "Traceback" not in result.stderr


def test_frozen_encoder_is_left_untouched(dataset: Path, tmp_path: Path) -> None:
    """A frozen encoder's batch-norm statistics must not drift while its embeddings are computed."""
    import torch

    train(TrainSettings(data=dataset, out=tmp_path / "frozen", encoder_options=TINY_VIT, freeze_encoder=True, epochs=2, batch_size=16))
    stem_norm = load_run(tmp_path / "frozen").model.encoder.patch_embed[1]
    assert isinstance(stem_norm, torch.nn.BatchNorm2d)
    assert torch.equal(stem_norm.running_mean, torch.zeros_like(stem_norm.running_mean))
    assert torch.equal(stem_norm.running_var, torch.ones_like(stem_norm.running_var))


def test_training_on_a_plain_photo_folder_is_refused(learnable_tree: Path, tmp_path: Path, run_cli) -> None:
    """A plain folder has no validation split: training used to validate (and pick its best epoch)
    on its own training photos, silently. Now a one-line error says how to build a dataset."""
    result = run_cli("train", "--data", learnable_tree, "--out", tmp_path / "r", "--epochs", "1", "--quiet")
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"instacli data build {learnable_tree} --out DATA" in result.stderr and "validation split" in result.stderr
    assert not (tmp_path / "r").exists()
