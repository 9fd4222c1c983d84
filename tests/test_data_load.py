"""load_data on built datasets and on plain photo folders (what `evaluate --data FOLDER` relies on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_photo, make_photo_tree
from instacli.errors import InstacliError
from instacli_datasets import build_dataset, load_data


def test_plain_folder_gives_every_readable_photo(tmp_path: Path) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 3, "landscape": 4})
    make_photo(src / "landscape" / "huge.png", size=(1200, 600))
    (src / "animal" / "bad.jpg").write_bytes(b"\xff\xd8 broken")
    ds, info = load_data(src, split="ignored-for-folders", workers=1)
    assert len(ds) == 8 and info.class_names == ["animal", "landscape"]
    assert [s.file for s in info.skipped] == ["animal/bad.jpg"]
    assert info.engagement is None and info.numeric_columns == [] and info.source == str(src.resolve())
    by_name = {row["file_name"]: row for row in ds}
    assert by_name["landscape/huge.png"]["image"].size == (512, 256)
    assert by_name["animal/animal_00.jpg"]["label"] == 0 and by_name["animal/animal_00.jpg"]["likes"] is None
    again, again_info = load_data(src, workers=2)
    assert again_info.fingerprint == info.fingerprint and again["file_name"] == ds["file_name"]


def test_plain_folder_with_one_category_is_allowed_for_evaluation(tmp_path: Path) -> None:
    ds, info = load_data(make_photo_tree(tmp_path / "src", {"animal": 2}), workers=1)
    assert info.class_names == ["animal"] and len(ds) == 2


def test_built_dataset_splits_and_errors(photo_tree: Path, tmp_path: Path) -> None:
    build_dataset(photo_tree, tmp_path / "data", workers=1)
    sizes = {split: len(load_data(tmp_path / "data", split=split)[0]) for split in ("train", "validation", "test")}
    assert sizes == {"train": 14, "validation": 3, "test": 3}
    with pytest.raises(InstacliError, match="has no split 'dev'; its splits: train, validation, test"):
        load_data(tmp_path / "data", split="dev")
    with pytest.raises(InstacliError, match="no such folder"):
        load_data(tmp_path / "nowhere")
