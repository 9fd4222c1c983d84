"""``instacli.load(RUN).predict(images, metadata=…)``: the rows of ``instacli predict``, in memory.

Paths, PIL images, arrays and file bytes of the same photos must answer exactly what ``predict``
writes for the files; what cannot be read gets its error row; what is no image at all is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import instacli
from instacli.errors import InstacliError
from instacli.prediction import predict_folder
from tests.test_pipeline import dataset, learnable_tree, trained  # noqa: F401 (session fixtures, trained once)


@pytest.fixture(scope="module")
def photos(learnable_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three photos of each category in one folder (so predict's file names are their bare names)."""
    folder = tmp_path_factory.mktemp("api-photos")
    for category in ("animal", "landscape"):
        for f in sorted((learnable_tree / category).iterdir())[:3]:
            (folder / f.name).write_bytes(f.read_bytes())
    return sorted(folder.iterdir())


def _predicted(trained: Path, photos: list[Path], tmp_path: Path, table: pd.DataFrame | None = None) -> list[dict]:
    meta = None
    if table is not None:
        meta = tmp_path / "meta.csv"
        table.assign(file_name=[p.name for p in photos]).to_csv(meta, index=False)
    predict_folder(trained, photos[0].parent, tmp_path / "p.jsonl", metadata=meta, workers=0)
    return [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]


def _same(frame: pd.DataFrame, expected: list[dict]) -> None:
    rows = frame.to_dict("records")
    assert len(rows) == len(expected)
    for mine, theirs in zip(rows, expected):
        assert mine["label"] == theirs["label"] and mine["likes"] == theirs["likes"]
        assert mine["likes_from_defaults"] == theirs["likes_from_defaults"] and mine["error"] == theirs["error"] == ""
        for key in ("prob_animal", "prob_landscape", "confidence"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-6)


def test_paths_images_arrays_and_bytes_answer_what_predict_writes(trained: Path, photos: list[Path], tmp_path: Path) -> None:
    table = pd.DataFrame({"comments": [3, 40, 7, 1, 90, 12], "shares": [1.0, None, 5.0, 0.0, 2.0, 8.0]})
    expected = _predicted(trained, photos, tmp_path, table)
    model = instacli.load(trained)
    assert model.classes == ["animal", "landscape"] and model.features == ["comments", "shares"]
    by_path = model.predict(photos, metadata=table)
    assert list(by_path["file"]) == [str(p) for p in photos] and list(by_path.columns)[:2] == ["file", "label"]
    _same(by_path, expected)
    _same(model.predict([Image.open(p) for p in photos], metadata=table.to_dict("records")), expected)
    _same(model.predict([np.asarray(Image.open(p).convert("RGB")) for p in photos], metadata=table, batch_size=4), expected)
    _same(model.predict([p.read_bytes() for p in photos], metadata=table), expected)
    _same(model.predict([bytearray(p.read_bytes()) for p in photos], metadata=table), expected)  # not iterated as ints
    assert model.predict(memoryview(photos[0].read_bytes()))["label"][0] == expected[0]["label"]
    one = model.predict(photos[0], metadata=table.iloc[0].to_dict())
    assert len(one) == 1 and one["label"][0] == expected[0]["label"]


def test_without_metadata_likes_come_from_the_training_medians(trained: Path, photos: list[Path], tmp_path: Path) -> None:
    frame = instacli.load(trained).predict(photos)
    assert frame["likes_from_defaults"].all()
    _same(frame, _predicted(trained, photos, tmp_path))


def test_an_unreadable_file_gets_its_error_row_and_the_rest_are_scored(trained: Path, photos: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    frame = instacli.load(trained).predict([photos[0], broken, tmp_path / "missing.jpg"])
    assert frame["error"][0] == "" and frame["label"][0] in ("animal", "landscape")
    assert frame["error"][1].startswith("unreadable") and pd.isna(frame["label"][1]) and pd.isna(frame["likes"][1])
    assert frame["error"][2] and pd.isna(frame["label"][2])


def test_an_empty_truncated_or_strip_image_in_memory_gets_its_error_row(trained: Path, photos: list[Path], tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(photos[0].read_bytes()[:200])
    strip = np.zeros((1, 200_000, 3), dtype=np.uint8)  # refused as a file (an aspect ratio no photo has): in memory too
    frame = instacli.load(trained).predict([np.zeros((0, 5, 3), dtype=np.uint8), Image.open(truncated), strip, Image.open(photos[0])])
    assert frame["error"][0] and frame["error"][1] and "aspect ratio" in frame["error"][2] and frame["error"][3] == ""
    assert frame["label"][:3].isna().all() and frame["label"][3] in ("animal", "landscape")


@pytest.mark.parametrize("images, metadata, message", [
    ([42], None, "a int is not an image"),
    (None, None, "images: a NoneType is no image"),
    ([np.zeros((8, 8, 3), dtype=np.float32)], None, "must be uint8"),
    (["x.jpg", "y.jpg"], [{"comments": 1}], "metadata has 1 rows for 2 images"),
    (["x.jpg"], ["comments=1"], "give a DataFrame"),
    (["x.jpg"], "comments", "give a DataFrame"),
    # counts are checked as a --metadata table's are: these gave NaN likes and a traceback from numpy
    (["x.jpg"], [{"comments": -5}], "metadata row 0: comments is negative"),
    (["x.jpg"], [{"shares": float("inf")}], "metadata row 0: shares is 'inf', not a whole number"),
    (["x.jpg"], pd.DataFrame({"comments": ["12x"]}), "metadata row 0: comments is '12x', not a number"),
    (["x.jpg"], [{"comments": 10**400}], "larger than any count"),
])
def test_what_is_no_image_or_no_row_is_refused_in_one_line(trained: Path, images: list, metadata: object, message: str) -> None:
    with pytest.raises(InstacliError, match=message) as caught:
        instacli.load(trained).predict(images, metadata=metadata)
    assert "\n" not in str(caught.value)


def test_load_refuses_a_folder_that_is_no_run_and_an_unknown_tta(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(InstacliError):
        instacli.load(tmp_path)
    with pytest.raises(InstacliError, match="tta='sideways'"):
        instacli.load(trained, tta="sideways")
    assert len(instacli.load([trained, trained], tta=True).predict(np.zeros((40, 30, 3), dtype=np.uint8))) == 1


def test_metadata_as_a_series_strings_or_nullable_ints_answers_as_numbers(trained: Path, photos: list[Path]) -> None:
    """A DataFrame row (a Series) is one image's row, and numeric strings and pd.NA read as a table's cells do."""
    model = instacli.load(trained)
    table = pd.DataFrame({"comments": [40, 7], "shares": [3, 5]})
    expected = model.predict(photos[:2], metadata=table)
    assert model.predict(photos[0], metadata=table.iloc[0])["likes"][0] == expected["likes"][0]
    as_text = model.predict(photos[:2], metadata=[{"comments": "40", "shares": "3"}, {"comments": "7", "shares": "5"}])
    assert list(as_text["likes"]) == list(expected["likes"])
    nullable = model.predict(photos[:2], metadata=pd.DataFrame({"comments": [40, None], "shares": [3, None]}, dtype="Int64"))
    assert nullable["likes"][0] == expected["likes"][0] and nullable["likes_from_defaults"].tolist() == [False, True]


def test_a_batch_size_that_is_no_whole_number_is_refused(trained: Path) -> None:
    with pytest.raises(InstacliError, match="batch_size=1.5"):
        instacli.load(trained).predict([np.zeros((8, 8, 3), dtype=np.uint8)], batch_size=1.5)
    with pytest.raises(InstacliError, match="batch_size 10000000: Input should be less than or equal to 4096"):
        instacli.load(trained).predict([np.zeros((8, 8, 3), dtype=np.uint8)], batch_size=10_000_000)
