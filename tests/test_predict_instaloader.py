"""``instacli predict RUN instaloader_dump/``: each post photo is scored with its own post's numbers, read
as ``data build`` reads them (the Instaloader fixtures of test_data_instaloader), without a hand-made table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from instacli.prediction import predict_folder
from instacli.settings import TrainSettings
from instacli.training import train
from instacli_datasets import build_dataset
from tests.conftest import built_rows, make_photo_tree
from tests.test_data_instaloader import make_download

TINY_VIT = {"image_size": 32, "patch_size": 8, "width": 16, "heads": 2}
POST_PHOTOS = {"natgeo/2024-01-01_10-00-00_UTC.jpg", "natgeo/2024-01-02_10-00-00_UTC_1.jpg",
               "cats/2023-05-05_08-00-00_UTC.png", "cats/2023-05-06_08-00-00_UTC.jpg"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run that reads comments and followers (realistic synthetic engagement) besides the photo."""
    root = tmp_path_factory.mktemp("insta-run")
    build_dataset(make_photo_tree(root / "photos"), root / "data", synthetic="realistic", seed=1, workers=1)
    train(TrainSettings(data=root / "data", out=root / "run", encoder_options=TINY_VIT, epochs=1, batch_size=8, workers=1))
    assert json.loads((root / "run" / "config.json").read_text())["scaler"]["features"] == ["comments", "followers"]
    return root / "run"


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def test_predict_reads_each_posts_own_metadata_as_data_build_does(run: Path, tmp_path: Path) -> None:
    download = make_download(tmp_path / "dl")
    summary = predict_folder(run, download, tmp_path / "preds.csv", workers=0)
    rows = _rows(tmp_path / "preds.csv")
    assert set(rows) == POST_PHOTOS and summary.scored == 4 and summary.failed == 0
    assert summary.from_defaults == 0, "every post brought its own numbers"
    assert list(rows["cats/2023-05-05_08-00-00_UTC.png"])[:3] == ["file", "shortcode", "owner"]
    assert (rows["natgeo/2024-01-01_10-00-00_UTC.jpg"]["shortcode"], rows["natgeo/2024-01-01_10-00-00_UTC.jpg"]["owner"]) == ("sc120", "natgeo")
    assert (rows["cats/2023-05-05_08-00-00_UTC.png"]["shortcode"], rows["cats/2023-05-05_08-00-00_UTC.png"]["owner"]) == ("sc40", "cats")

    # the same numbers as `data build` stores: predicting with them as a hand-made table gives the same rows
    report = build_dataset(download, tmp_path / "data", workers=1)
    table = tmp_path / "table.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file_name", "comments", "followers"])
        writer.writeheader()
        writer.writerows({"file_name": name, "comments": row["comments"], "followers": row["followers"]}
                         for name, row in built_rows(tmp_path / "data").items())
    by_table = _rows(Path(predict_folder(run, download, tmp_path / "by_table.csv", metadata=table, workers=0).out))
    for name in POST_PHOTOS:
        assert {k: v for k, v in rows[name].items() if k not in ("shortcode", "owner")} == by_table[name]
    # videos, the profile picture, unreadable metadata and a photo without a post: skipped and counted as in build
    assert summary.skipped == report.skipped and len(summary.skipped) == 4


def test_carousel_all_scores_every_photo_of_a_post(run: Path, tmp_path: Path, run_cli) -> None:
    download = make_download(tmp_path / "dl")
    result = run_cli("predict", run, download, "--carousel", "all", "--out", tmp_path / "p.jsonl", "--workers", "0")
    assert result.code == 0, result.stderr
    assert "skipped 4 file(s) that are not post photos" in result.stdout and "1 video post" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    carousel = [r for r in rows if r["file"].startswith("natgeo/2024-01-02")]
    assert sorted(r["file"] for r in carousel) == ["natgeo/2024-01-02_10-00-00_UTC_1.jpg", "natgeo/2024-01-02_10-00-00_UTC_3.jpg"]
    assert {r["shortcode"] for r in carousel} == {"sc-1"}, "every photo of the carousel carries its post"


def test_carousel_on_a_plain_folder_is_a_one_line_error(run: Path, tmp_path: Path, run_cli) -> None:
    photos = make_photo_tree(tmp_path / "photos", {"animal": 1, "landscape": 1})
    result = run_cli("predict", run, photos, "--carousel", "all", "--out", tmp_path / "p.csv")
    assert result.code == 2 and "--carousel: only for an Instaloader download" in result.stderr
    assert not (tmp_path / "p.csv").exists()
