"""Instaloader downloads as a data build source, from fixtures written to instaloader 4.x's schema."""

from __future__ import annotations

import json
import lzma
from pathlib import Path
from typing import Any

import pytest
from datasets import ClassLabel, DatasetDict

from tests.conftest import built_rows, make_photo
from instacli.errors import InstacliError
from instacli_datasets import build_dataset, load_data
from instacli_datasets.instaloader import VIDEO_REASON


def _write_metadata(path: Path, node: dict[str, Any], node_type: str = "Post") -> None:
    """What instaloader's save_structure_to_file writes: LZMA JSON for .json.xz, indented JSON for .json."""
    data = {"node": node, "instaloader": {"version": "4.16", "node_type": node_type}}
    if path.name.endswith(".xz"):
        with lzma.open(path, "wt", check=lzma.CHECK_NONE) as handle:
            json.dump(data, handle, separators=(",", ":"))
    else:
        path.write_text(json.dumps(data, indent=4, sort_keys=True))


def _post(typename: str, likes: int | None, *, caption: str | None = None, owner: dict | None = None, **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "__typename": typename, "is_video": typename == "GraphVideo", "shortcode": f"sc{likes}",
        "taken_at_timestamp": 1700000000 + (likes or 0), "owner": owner or {"id": "1", "username": "natgeo"},
        "edge_media_to_caption": {"edges": [{"node": {"text": caption}}] if caption is not None else []},
    }
    if likes is not None:
        node["edge_media_preview_like"] = {"count": likes}
    return node | extra


def make_download(root: Path) -> Path:
    """Two accounts: natgeo (with a profile file) and cats (without), covering every case we read."""
    geo, cats = root / "natgeo", root / "cats"
    geo.mkdir(parents=True)
    cats.mkdir()
    _write_metadata(geo / "natgeo_1.json.xz", {"id": "1", "username": "natgeo", "edge_followed_by": {"count": 5000}}, "Profile")
    geo.joinpath("id").write_text("1\n")

    single = "2024-01-01_10-00-00_UTC"
    make_photo(geo / f"{single}.jpg", color=(10, 200, 10))
    _write_metadata(geo / f"{single}.json.xz", _post("GraphImage", 120, caption="forest #green", edge_media_to_comment={"count": 5}))

    carousel = "2024-01-02_10-00-00_UTC"
    for index, color in ((1, (200, 0, 0)), (2, (0, 0, 0)), (3, (0, 0, 200))):
        make_photo(geo / f"{carousel}_{index}.jpg", color=color)
    (geo / f"{carousel}_2.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (geo / f"{carousel}.txt").write_text("caption from the txt file\n")
    _write_metadata(geo / f"{carousel}.json", _post(
        "GraphSidecar", -1, edge_media_to_parent_comment={"count": 7},
        edge_sidecar_to_children={"edges": [{"node": {"is_video": v}} for v in (False, True, False)]},
    ))

    video = "2024-01-03_10-00-00_UTC"
    make_photo(geo / f"{video}.jpg")
    (geo / f"{video}.mp4").write_bytes(b"\x00")
    _write_metadata(geo / f"{video}.json.xz", _post("GraphVideo", 999))

    broken = "2024-01-04_10-00-00_UTC"
    make_photo(geo / f"{broken}.jpg")
    (geo / f"{broken}.json.xz").write_bytes(b"\xfd7zXZ\x00 truncated")
    make_photo(geo / f"{single}_profile_pic.jpg")

    owner = {"id": "2", "username": "cats", "edge_followed_by": {"count": 300}}
    make_photo(cats / "2023-05-05_08-00-00_UTC.png", color=(250, 250, 0))
    _write_metadata(cats / "2023-05-05_08-00-00_UTC.json.xz", _post("GraphImage", 40, caption="", owner=owner, comments=3))
    make_photo(cats / "2023-05-06_08-00-00_UTC.jpg", color=(250, 0, 250))
    _write_metadata(cats / "2023-05-06_08-00-00_UTC.json", _post(
        "GraphImage", None, owner={"id": "2", "username": "cats"}, edge_liked_by={"count": 41}, edge_media_to_comment={"count": -1},
    ))
    return root


@pytest.fixture
def download(tmp_path: Path) -> Path:
    return make_download(tmp_path / "dl")



def test_likes_only_build_reads_every_field(download: Path, tmp_path: Path) -> None:
    report = build_dataset(download, tmp_path / "data", workers=1)
    assert report.engagement == "instaloader" and report.class_names == []
    rows = built_rows(tmp_path / "data")
    assert set(rows) == {
        "natgeo/2024-01-01_10-00-00_UTC.jpg", "natgeo/2024-01-02_10-00-00_UTC_1.jpg",
        "cats/2023-05-05_08-00-00_UTC.png", "cats/2023-05-06_08-00-00_UTC.jpg",
    }
    single = rows["natgeo/2024-01-01_10-00-00_UTC.jpg"]
    assert (single["likes"], single["comments"], single["followers"]) == (120, 5, 5000)
    assert single["caption"] == "forest #green" and single["timestamp"] == 1700000120 and single["label"] == -1
    carousel = rows["natgeo/2024-01-02_10-00-00_UTC_1.jpg"]
    assert carousel["likes"] is None, "a hidden (negative) like count is missing, not zero"
    assert carousel["comments"] == 7 and carousel["caption"] == "caption from the txt file" and carousel["followers"] == 5000
    assert rows["cats/2023-05-05_08-00-00_UTC.png"] | {"split": None, "label": None, "file_name": None} == {
        "likes": 40, "comments": 3, "followers": 300, "caption": "", "timestamp": 1700000040, "shares": None,
        "split": None, "label": None, "file_name": None,
    }
    fallback = rows["cats/2023-05-06_08-00-00_UTC.jpg"]
    assert (fallback["likes"], fallback["comments"], fallback["followers"], fallback["caption"]) == (41, None, None, None)

    dd = DatasetDict.load_from_disk(str(tmp_path / "data"))
    assert dd["train"].features["label"] == ClassLabel(names=[])
    reasons = {s.file: s.reason for s in report.skipped}
    assert reasons["natgeo/2024-01-03_10-00-00_UTC.json.xz"] == VIDEO_REASON
    assert "unreadable instaloader metadata" in reasons["natgeo/2024-01-04_10-00-00_UTC.json.xz"]
    assert reasons["natgeo/2024-01-04_10-00-00_UTC.jpg"] == reasons["natgeo/2024-01-01_10-00-00_UTC_profile_pic.jpg"] == "no instaloader post metadata for it"
    assert len(reasons) == 4
    meta = json.loads((tmp_path / "data" / "instacli_dataset.json").read_text())
    assert meta["source_kind"] == "instaloader" and meta["class_names"] == [] and meta["class_counts"]["train"] == {"(unlabeled)": meta["splits"]["train"]}
    assert meta["numeric_columns"] == ["comments", "followers"]


def test_carousel_all_keeps_a_post_in_one_split_and_owner_labels(download: Path, tmp_path: Path) -> None:
    build_dataset(download, tmp_path / "data", carousel="all", label_from="owner", val_fraction=0.3, test_fraction=0.3, workers=1)
    rows = built_rows(tmp_path / "data")
    first, third = rows["natgeo/2024-01-02_10-00-00_UTC_1.jpg"], rows["natgeo/2024-01-02_10-00-00_UTC_3.jpg"]
    assert "natgeo/2024-01-02_10-00-00_UTC_2.jpg" not in rows, "the video slide of a carousel is skipped"
    assert first["split"] == third["split"] and first["likes"] is None and third["comments"] == 7
    _, info = load_data(tmp_path / "data", split="train")
    assert info.class_names == ["cats", "natgeo"]
    assert {r["label"] for name, r in rows.items() if name.startswith("cats/")} == {0}


def test_labels_table_and_its_errors(download: Path, tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("file_name,label\nnatgeo/2024-01-01_10-00-00_UTC.jpg,landscape\nnatgeo/2024-01-02_10-00-00_UTC_1.jpg,landscape\n"
                     "cats/2023-05-05_08-00-00_UTC.png,animal\n")
    with pytest.raises(InstacliError, match=r"labels.csv: no label for photo 'cats/2023-05-06_08-00-00_UTC.jpg'"):
        build_dataset(download, tmp_path / "data", labels=table)
    with table.open("a") as handle:
        handle.write("cats/2023-05-06_08-00-00_UTC.jpg,animal\n")
    build_dataset(download, tmp_path / "data", labels=table, workers=1)
    assert load_data(tmp_path / "data", split="train")[1].class_names == ["animal", "landscape"]
    with pytest.raises(InstacliError, match="--labels and --label-from"):
        build_dataset(download, tmp_path / "other", labels=table, label_from="owner")
    with pytest.raises(InstacliError, match="--engagement: instaloader downloads bring their own"):
        build_dataset(download, tmp_path / "other", engagement=table)
    with pytest.raises(InstacliError, match="--synthetic-engagement"):
        build_dataset(download, tmp_path / "other", synthetic="seed")
    assert not (tmp_path / "other").exists()


def test_forced_source_with_custom_filename_pattern(tmp_path: Path) -> None:
    src = tmp_path / "dl" / "acct"
    for i, name in enumerate(("CxAbc", "CxDef", "CxGhi")):
        make_photo(src / f"{name}.jpg", color=(i * 80, 0, 0))
        _write_metadata(src / f"{name}.json", _post("GraphImage", 10 * i))
    with pytest.raises(InstacliError, match="need at least 2"):
        build_dataset(tmp_path / "dl", tmp_path / "data", workers=1)  # auto: looks like a single category folder
    build_dataset(tmp_path / "dl", tmp_path / "data", layout="instaloader", workers=1)
    assert sorted(r["likes"] for r in built_rows(tmp_path / "data").values()) == [0, 10, 20]


def test_plain_load_and_cli(download: Path, tmp_path: Path, run_cli) -> None:
    ds, info = load_data(download, workers=1)
    assert len(ds) == 4 and info.engagement == "instaloader" and info.class_names == []
    result = run_cli("data", "build", download, "--out", tmp_path / "data", "--label-from", "owner", "--carousel", "all")
    assert result.code == 0, result.stderr
    assert "1 video posts" in result.stdout and "natgeo" in result.stdout
    info_out = run_cli("data", "info", tmp_path / "data")
    assert info_out.code == 0 and "followers" in info_out.stdout and "instaloader" in info_out.stdout
    bad = run_cli("data", "build", download, "--out", tmp_path / "bad", "--carousel", "some")
    assert bad.code == 2 and "--carousel" in bad.stderr and not (tmp_path / "bad").exists()
