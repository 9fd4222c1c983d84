"""Real engagement data end to end: an instaloader download (likes-only), category-only photos,
``--features`` with missing values, ``--map`` for tables with other column names, and the oracle of
``--synthetic-engagement realistic`` next to the model's likes error in ``evaluate``.

Every model is a tiny vit-scratch trained for a few epochs on a frozen encoder: these tests prove the
plumbing (what is stored, read, imputed, counted and reported), not accuracy.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from instacli.evaluation import evaluate
from instacli.prediction import predict_folder
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import make_photo, make_photo_tree
from tests.test_data_instaloader import _post, _write_metadata

TINY = {"image_size": 32, "patch_size": 8, "width": 32, "heads": 2}
TINY_FLAGS = [f"-E{k}={v}" for k, v in TINY.items()]
FAST = ["--epochs", "3", "--batch-size", "8", "--freeze-encoder", "--workers", "0", "--quiet"]


def _train(data: Path, out: Path, **overrides) -> Path:
    settings = TrainSettings(data=data, out=out, encoder_options=TINY, freeze_encoder=True, epochs=3, batch_size=8,
                             warmup_epochs=1, workers=0, **overrides)
    train(settings)
    return out


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    return list(reader.fieldnames or []), rows


def make_instaloader_download(root: Path, posts_per_account: int = 15) -> Path:
    """Two accounts in instaloader 4.x layout: natgeo (followers from its profile file) and cats
    (followers inline in each post's owner); ``posts_per_account`` single-photo posts each, with likes,
    comments and a caption. No labels: this is likes-only data."""
    rng = np.random.default_rng(0)
    accounts = {"natgeo": ({"id": "1", "username": "natgeo"}, 5000), "cats": ({"id": "2", "username": "cats", "edge_followed_by": {"count": 300}}, 300)}
    for a, (name, (owner, followers)) in enumerate(accounts.items()):
        folder = root / name
        folder.mkdir(parents=True)
        if name == "natgeo":
            _write_metadata(folder / "natgeo_1.json.xz", {"id": "1", "username": "natgeo", "edge_followed_by": {"count": followers}}, "Profile")
        for i in range(posts_per_account):
            stem = f"2024-{a + 1:02d}-{i + 1:02d}_10-00-00_UTC"
            make_photo(folder / f"{stem}.jpg", color=(int(rng.integers(0, 256)), 120 * a, 10 * i))
            likes = int(followers * rng.uniform(0.2, 0.6))
            _write_metadata(folder / f"{stem}.json.xz", _post(
                "GraphImage", likes, caption=f"post {i} of {name}", owner=owner,
                edge_media_to_comment={"count": max(1, likes // 50)},
            ))
    return root


def test_instaloader_download_trains_likes_only_and_predicts(tmp_path: Path, run_cli) -> None:
    download = make_instaloader_download(tmp_path / "dl")
    data, run = tmp_path / "data", tmp_path / "run"
    result = run_cli("data", "build", download, "--out", data, "--workers", "1")
    assert result.code == 0, result.stderr
    assert "engagement: instaloader" in result.stdout

    result = run_cli("train", "--data", data, "--out", run, "--task", "likes", *TINY_FLAGS, *FAST)
    assert result.code == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "likes" and config["class_names"] == []
    assert config["scaler"]["features"] == ["comments", "followers"]

    result = run_cli("evaluate", run, "--data", data, "--json")
    assert result.code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["accuracy"] is None and metrics["per_class"] is None and metrics["likes_mae_class_median"] is None
    assert metrics["likes_mae"] > 0 and metrics["log_likes_mae"] is not None and metrics["imputed_values"] == 0
    assert metrics["oracle_log_likes_mae"] is None  # real engagement has no oracle
    assert run_cli("evaluate", run, "--data", data).code == 0  # the table prints with no classes

    # numbers for predict from a table with its own column names, read through --map
    meta = tmp_path / "posts.csv"
    files = sorted(p.relative_to(download).as_posix() for p in download.rglob("*.jpg"))
    rows = {r["file_name"]: r for split in ("train", "validation", "test") for r in _built(data, split)}
    with meta.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "n_comments", "n_followers"])
        writer.writerows([f, rows[f]["comments"], rows[f]["followers"]] for f in files)
    out = tmp_path / "pred.csv"
    result = run_cli("predict", run, download, "--metadata", meta, "--map", "file_name=path,comments=n_comments",
                     "--map", "followers=n_followers", "--out", out, "--workers", "0")
    assert result.code == 0, result.stderr
    columns, predicted = _read_csv(out)
    assert columns == ["file", "label", "likes", "likes_from_defaults", "error"], "a likes-only run writes no label or prob_ columns"
    assert [r["file"] for r in predicted] == files
    assert all(r["label"] == "" and r["error"] == "" and r["likes_from_defaults"] == "False" for r in predicted)
    assert all(float(r["likes"]) > 0 for r in predicted)

    # the table must name the column by its mapped name; a missing column is a one-line error
    result = run_cli("predict", run, download, "--metadata", meta, "--out", tmp_path / "bad.csv", "--workers", "0")
    assert result.code == 2 and "file_name" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _built(data: Path, split: str) -> list[dict]:
    from instacli_datasets import load_data

    ds, _ = load_data(data, split)
    return list(ds.remove_columns("image"))


def test_category_only_photos_train_evaluate_and_predict(tmp_path: Path, run_cli) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 8, "landscape": 8})
    result = run_cli("data", "build", src, "--out", tmp_path / "data", "--workers", "1")
    assert result.code == 0 and "engagement: none" in result.stdout
    run = _train(tmp_path / "data", tmp_path / "run")  # --task auto
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "category" and config["class_names"] == ["animal", "landscape"] and config["scaler"]["features"] == []

    metrics = evaluate(run, tmp_path / "data")
    assert metrics["accuracy"] is not None and metrics["confusion_matrix"] is not None
    for key in ("likes_mae", "likes_rmse", "likes_r2", "likes_spearman", "log_likes_mae", "likes_mae_class_median", "oracle_log_likes_mae"):
        assert metrics[key] is None, key
    assert metrics["imputed_values"] == 0

    out = tmp_path / "p.jsonl"
    summary = predict_folder(run, src, out, workers=0)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.scored == 16 and summary.from_defaults == 0 and summary.imputed == 0
    assert all(r["likes"] is None and r["likes_from_defaults"] is None and r["label"] in ("animal", "landscape") for r in rows)


@pytest.fixture
def sparse_comments(tmp_path: Path) -> tuple[Path, Path, dict[str, dict]]:
    """20 photos with likes, shares and comments where every fourth comment count is empty."""
    src = make_photo_tree(tmp_path / "src", {"animal": 10, "landscape": 10})
    table = tmp_path / "engagement.csv"
    values = {}
    for i, path in enumerate(sorted(src.rglob("*.jpg"))):
        values[path.relative_to(src).as_posix()] = {"likes": 100 + 37 * i, "comments": None if i % 4 == 0 else (7 if i % 3 else 900), "shares": 3 + i}
    table.write_text("file_name,likes,comments,shares\n" + "".join(
        f"{name},{v['likes']},{'' if v['comments'] is None else v['comments']},{v['shares']}\n" for name, v in values.items()))
    return src, table, values


def test_features_choice_is_stored_enforced_and_missing_values_imputed(sparse_comments, tmp_path: Path, run_cli) -> None:
    from instacli_datasets import build_dataset

    src, table, values = sparse_comments
    data = tmp_path / "data"
    build_dataset(src, data, engagement=table, workers=1)
    run = tmp_path / "run"
    result = run_cli("train", "--data", data, "--out", run, "--features", "comments", *TINY_FLAGS, *FAST)
    assert result.code == 0, result.stderr
    scaler = json.loads((run / "config.json").read_text())["scaler"]
    train_rows = _built(data, "train")
    observed = [r["comments"] for r in train_rows if r["comments"] is not None]
    assert scaler["features"] == ["comments"]
    assert scaler["medians"] == [float(np.median(observed))] == [7.0], "imputation uses the training median"
    assert scaler["train_missing"] == {"comments": sum(r["comments"] is None for r in train_rows)} and scaler["train_missing"]["comments"] > 0

    assert evaluate(run, data, split="train")["imputed_values"] == scaler["train_missing"]["comments"]
    assert evaluate(run, data)["imputed_values"] == sum(r["comments"] is None for r in _built(data, "test"))

    # the same photo three times: comments empty, comments = training median, no row at all → same likes
    folder = tmp_path / "incoming"
    photo = (src / next(iter(values))).read_bytes()
    for name in ("empty.jpg", "median.jpg", "absent.jpg", "many.jpg"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(photo)
    meta = tmp_path / "meta.csv"
    meta.write_text("file_name,comments\nempty.jpg,\nmedian.jpg,7\nmany.jpg,900\n")
    summary = predict_folder(run, folder, tmp_path / "p.jsonl", metadata=meta, workers=0)
    assert (summary.from_defaults, summary.imputed) == (1, 1)  # absent.jpg's fallback is counted once, as a row
    likes = {r["file"]: r["likes"] for r in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    assert likes["empty.jpg"] == pytest.approx(likes["median.jpg"]) == pytest.approx(likes["absent.jpg"])
    assert likes["many.jpg"] != pytest.approx(likes["median.jpg"]), "comments do reach the likes head"

    # shares is in the data but not a model input, so a table without shares is fine; one without comments is not
    result = run_cli("predict", run, folder, "--metadata", meta, "--out", tmp_path / "ok.csv", "--workers", "0")
    assert result.code == 0 and "1 missing value(s) in the engagement rows" in result.stdout, result.stdout
    no_comments = tmp_path / "no_comments.csv"
    no_comments.write_text("file_name,shares\nmedian.jpg,4\n")
    result = run_cli("predict", run, folder, "--metadata", no_comments, "--out", tmp_path / "bad.csv", "--workers", "0")
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "lacks column(s) comments" in result.stderr and not (tmp_path / "bad.csv").exists()
    result = run_cli("train", "--data", data, "--out", tmp_path / "r2", "--features", "followers", *TINY_FLAGS, *FAST)
    assert result.code == 2 and "followers not in the data" in result.stderr


def test_table_with_other_column_names_goes_through_with_map(tmp_path: Path, run_cli) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 10, "landscape": 10})
    table = tmp_path / "export.csv"
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    table.write_text("like_count,n_comments,distribution,img\n" + "".join(f"{50 + 10 * i},{i},{2 * i},{n}\n" for i, n in enumerate(names)))
    data = tmp_path / "data"
    result = run_cli("data", "build", src, "--out", data, "--engagement", table, "--map", "likes=like_count,comments=n_comments,file_name=img",
                     "--workers", "1")
    assert result.code == 0, result.stderr
    rows = {r["file_name"]: r for split in ("train", "validation", "test") for r in _built(data, split)}
    i = 5
    assert (rows[names[i]]["likes"], rows[names[i]]["comments"], rows[names[i]]["shares"]) == (50 + 10 * i, i, 2 * i)

    run = _train(data, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "both" and config["scaler"]["features"] == ["comments", "shares"]
    result = run_cli("evaluate", run, "--data", data, "--json")
    assert result.code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["accuracy"] is not None and metrics["likes_mae"] is not None and metrics["imputed_values"] == 0

    out = tmp_path / "p.csv"
    result = run_cli("predict", run, src, "--metadata", table, "--map", "comments=n_comments,file_name=img", "--out", out, "--workers", "0")
    assert result.code == 0, result.stderr
    _, predicted = _read_csv(out)
    assert len(predicted) == 20 and all(r["likes_from_defaults"] == "False" and r["label"] in ("animal", "landscape") for r in predicted)


def test_evaluate_reports_the_oracle_on_realistic_synthetic_data(tmp_path: Path, run_cli) -> None:
    from instacli_datasets import build_dataset, load_data, oracle_log_likes

    src = make_photo_tree(tmp_path / "src", {"animal": 12, "landscape": 12})
    data = tmp_path / "data"
    build_dataset(src, data, synthetic="realistic", seed=3, workers=1, test_fraction=0.25)
    run = _train(data, tmp_path / "run")
    metrics = evaluate(run, data)
    test, info = load_data(data, "test")
    likes = np.asarray(test["likes"], dtype=float)
    oracle = oracle_log_likes(test, info.params)
    assert metrics["oracle_log_likes_mae"] == pytest.approx(np.mean(np.abs(oracle - np.log1p(likes))))
    assert metrics["oracle_likes_mae"] == pytest.approx(np.mean(np.abs(np.expm1(oracle) - likes)))
    assert 0 < metrics["oracle_log_likes_mae"] < metrics["log_likes_mae"] + 1.0
    result = run_cli("evaluate", run, "--data", data)
    assert result.code == 0 and "oracle_log_likes_mae" in result.stdout and "oracle_likes_mae" in result.stdout

    # a likes-only run on the same data still gets the oracle (it knows the true category; the run does not)
    likes_run = _train(data, tmp_path / "likes-run", task="likes")
    assert evaluate(likes_run, data)["oracle_log_likes_mae"] == pytest.approx(metrics["oracle_log_likes_mae"])
