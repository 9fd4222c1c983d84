"""data build → load round trip: schema, splits, determinism, image handling, skipped files, atomicity."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import ClassLabel, DatasetDict, Image as ImageFeature, Value
from PIL import Image

from tests.conftest import make_photo, make_photo_tree
from instacli.errors import InstacliError
from instacli_datasets import build_dataset, iter_image_files, load_data


def _build(src: Path, out: Path, **kwargs):
    return build_dataset(src, out, workers=kwargs.pop("workers", 1), **kwargs)


def test_round_trip_schema_and_info(photo_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    report = build_dataset(photo_tree, out, workers=2)
    assert report.n_images == 20 and report.skipped == [] and report.kept_original == 20

    ds, info = load_data(out, split="train")
    assert isinstance(ds.features["image"], ImageFeature)
    assert ds.features["label"] == ClassLabel(names=["animal", "landscape"])
    for column in ("likes", "comments", "shares"):
        assert ds.features[column] == Value("int64")
        assert set(ds[column]) == {None}
    assert ds.features["file_name"] == Value("string")
    assert all(name.startswith(("animal/", "landscape/")) for name in ds["file_name"])
    row = ds[0]
    assert row["image"].mode == "RGB"
    assert row["image"].size == (32, 24)
    assert (photo_tree / row["file_name"]).read_bytes() == ds.cast_column("image", ImageFeature(decode=False))[0]["image"]["bytes"]

    assert info.class_names == ["animal", "landscape"] and info.engagement is None
    assert info.numeric_columns == [] and info.fingerprint.startswith("sha256:")
    meta = json.loads((out / "instacli_dataset.json").read_text())
    assert meta["splits"] == {"train": 14, "validation": 3, "test": 3}
    assert meta["class_names"] == ["animal", "landscape"] and meta["seed"] == 42 and meta["max_side"] == 256
    assert meta["fingerprint"] == report.fingerprint == info.fingerprint
    assert meta["source"] == str(photo_tree.resolve()) and meta["engagement"] is None


def test_splits_are_stratified_disjoint_and_deterministic(tmp_path: Path) -> None:
    src = make_photo_tree(tmp_path / "src", {"a": 20, "b": 10, "c": 7}, size=(8, 8))
    first = _build(src, tmp_path / "one", val_fraction=0.2, test_fraction=0.2, seed=3)
    again = _build(src, tmp_path / "two", val_fraction=0.2, test_fraction=0.2, seed=3)
    other = _build(src, tmp_path / "three", val_fraction=0.2, test_fraction=0.2, seed=4)
    assert first.counts == {
        "train": {"a": 12, "b": 6, "c": 5}, "validation": {"a": 4, "b": 2, "c": 1}, "test": {"a": 4, "b": 2, "c": 1},
    }
    assert first.fingerprint == again.fingerprint != other.fingerprint

    dd = DatasetDict.load_from_disk(str(tmp_path / "one"))
    names = {split: set(dd[split]["file_name"]) for split in dd}
    assert not (names["train"] & names["validation"]) and not (names["train"] & names["test"])
    assert len(set().union(*names.values())) == 37
    assert names == {split: set(DatasetDict.load_from_disk(str(tmp_path / "two"))[split]["file_name"]) for split in dd}
    assert names != {split: set(DatasetDict.load_from_disk(str(tmp_path / "three"))[split]["file_name"]) for split in dd}


def test_any_category_names_nested_photos_and_resizing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_photo(src / "Cats" / "2023" / "june" / "big.JPG", size=(600, 300))
    make_photo(src / "Cats" / "small.png", size=(20, 10))
    make_photo(src / "dogs and wolves" / "rotated.jpg", size=(40, 20), exif_orientation=6)
    make_photo(src / "dogs and wolves" / "alpha.png", size=(10, 10), mode="RGBA")
    make_photo(src / "dogs and wolves" / "gray.jpg", size=(10, 10), mode="L")
    make_photo(src / "zebra" / "z.webp", size=(300, 600))
    _build(src, tmp_path / "data", max_side=64, val_fraction=0, test_fraction=0)
    ds, info = load_data(tmp_path / "data", split="train")
    assert info.class_names == ["Cats", "dogs and wolves", "zebra"]
    by_name = {row["file_name"]: row for row in ds}
    assert by_name["Cats/2023/june/big.JPG"]["image"].size == (64, 32)
    assert by_name["zebra/z.webp"]["image"].size == (32, 64)
    rotated = by_name["dogs and wolves/rotated.jpg"]["image"]
    assert rotated.size == (20, 40)
    assert rotated.getpixel((10, 2))[0] < 40, "EXIF orientation 6 puts the black left strip on top"
    assert by_name["dogs and wolves/alpha.png"]["image"].getpixel((5, 5)) == (255, 255, 255)
    assert all(row["image"].mode == "RGB" for row in ds)
    raw = ds.cast_column("image", ImageFeature(decode=False))
    assert (src / "Cats/small.png").read_bytes() in {r["image"]["bytes"] for r in raw}, "small PNG keeps its bytes"
    assert Image.open(io.BytesIO(raw[ds["file_name"].index("zebra/z.webp")]["image"]["bytes"])).format == "JPEG"


def test_unreadable_and_non_image_files_are_skipped_and_listed(photo_tree: Path, tmp_path: Path) -> None:
    (photo_tree / "animal" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (photo_tree / "animal" / "notes.txt").write_text("hello")
    (photo_tree / "animal" / ".DS_Store").write_bytes(b"\0")
    truncated = (photo_tree / "landscape" / "landscape_00.jpg").read_bytes()
    (photo_tree / "landscape" / "cut.jpg").write_bytes(truncated[: len(truncated) // 2])
    report = _build(photo_tree, tmp_path / "data", workers=2)
    assert report.n_images == 20
    listed = json.loads((tmp_path / "data" / "build_report.json").read_text())["skipped"]
    reasons = {item["file"]: item["reason"] for item in listed}
    assert set(reasons) == {"animal/broken.jpg", "animal/notes.txt", "landscape/cut.jpg"}
    assert "unreadable" in reasons["animal/broken.jpg"] and "not an image" in reasons["animal/notes.txt"]


def test_category_whose_photos_are_all_unreadable_is_an_error(photo_tree: Path, tmp_path: Path) -> None:
    (photo_tree / "broken").mkdir()
    (photo_tree / "broken" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(InstacliError, match="category 'broken'.*broken/x.jpg"):
        _build(photo_tree, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_overwrite_replaces_only_datasets(photo_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    first = _build(photo_tree, out, seed=1)
    with pytest.raises(InstacliError, match="already exists.*--overwrite"):
        _build(photo_tree, out, seed=2)
    assert json.loads((out / "instacli_dataset.json").read_text())["fingerprint"] == first.fingerprint
    second = _build(photo_tree, out, seed=2, overwrite=True)
    assert json.loads((out / "instacli_dataset.json").read_text())["fingerprint"] == second.fingerprint != first.fingerprint
    precious = tmp_path / "precious"
    (precious / "keep.txt").parent.mkdir()
    (precious / "keep.txt").write_text("mine")
    with pytest.raises(InstacliError, match="not an instacli dataset folder"):
        _build(photo_tree, precious, overwrite=True)
    assert (precious / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "precious", "src"], "no temporary folders left"


def test_interrupted_build_leaves_nothing(photo_tree: Path, tmp_path: Path) -> None:
    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(photo_tree, tmp_path / "data", workers=2, progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_iter_image_files_is_sorted_recursive_and_case_insensitive(tmp_path: Path) -> None:
    for name in ("b/x.PNG", "a/deep/y.jpeg", "a/z.TIFF", "a/readme.md", "c.gif", ".hidden/h.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)] == ["a/deep/y.jpeg", "a/z.TIFF", "b/x.PNG", "c.gif"]


def test_option_checks(photo_tree: Path, tmp_path: Path) -> None:
    for kwargs, message in (
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "--val-fraction \\+ --test-fraction"),
        ({"test_fraction": 1.5}, "--test-fraction"),
        ({"max_side": 2}, "--max-side"),
        ({"synthetic": "bogus"}, "--synthetic-engagement"),
    ):
        with pytest.raises(InstacliError, match=message):
            _build(photo_tree, tmp_path / "data", **kwargs)
    with pytest.raises(InstacliError, match="--out"):
        _build(photo_tree, photo_tree / "inside")
    with pytest.raises(InstacliError, match="at least 2"):
        _build(make_photo_tree(tmp_path / "one", {"solo": 3}), tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_decode_pool_does_not_fork_the_calling_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked pool worker of a multi-threaded caller (the test process runs torch) hung forever on
    its queue lock; workers now start from a fork server (or spawn), and still encode every photo."""
    import multiprocessing

    from instacli_datasets import photo_bytes as images

    methods: list[str | None] = []
    real = multiprocessing.get_context
    monkeypatch.setattr(images.multiprocessing, "get_context", lambda method=None: (methods.append(method), real(method))[1])
    paths = []
    for i in range(6):
        path = tmp_path / f"p{i}.png"
        Image.new("RGB", (40 + i, 30), (i * 40, 0, 0)).save(path)
        paths.append(str(path))
    results = list(images.encode_photos(paths, max_side=32, workers=2))
    assert methods == [images.POOL_START_METHOD] and images.POOL_START_METHOD in ("forkserver", "spawn")
    assert len(results) == 6 and all(not isinstance(r, str) for r in results)


def test_a_script_without_a_main_guard_fails_at_once_instead_of_looping(tmp_path: Path) -> None:
    """The README's Python example, saved as a script, never ended: each decoding worker re-ran the
    script (the fork server and spawn import __main__), failed, and multiprocessing.Pool replaced it, forever."""
    make_photo_tree(tmp_path / "photos", {"animal": 3, "landscape": 3})
    (tmp_path / "script.py").write_text("import instacli.settings\ninstacli.settings.usable_cores = lambda: 2  # a pool even on one core\n"
                                        "from instacli_datasets import build_dataset\nbuild_dataset('photos', 'data', synthetic='seed', workers=2)\n")
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1 and not (tmp_path / "data").exists()
    assert 'InstacliError: a photo-decoding worker process died' in done.stderr.splitlines()[-1], done.stderr[-2000:]


def test_more_workers_than_cores_or_photos_start_no_more_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``data build --workers 100000`` started (or hung starting) 100,000 processes; train's and evaluate's
    first decode would have too."""
    from types import SimpleNamespace

    from instacli import decode_cache
    from instacli.settings import usable_cores
    from instacli_datasets import photo_bytes as images

    class Started(Exception):
        """Raised instead of starting the processes: their count is all the test needs."""

    asked: list[int] = []

    def start(processes: int, **kwargs: object) -> None:
        asked.append(processes)
        raise Started

    monkeypatch.setattr(images, "ProcessPoolExecutor", start)
    with pytest.raises(Started):
        list(images.encode_photos(["a.jpg", "b.jpg", "c.jpg"], max_side=32, workers=10**5))
    monkeypatch.setattr(decode_cache.torch.utils.data, "DataLoader", lambda *args, num_workers, **kwargs: start(num_workers))
    with pytest.raises(Started):
        decode_cache.decode_split([{"bytes": b"", "path": None}] * 300, 16, None, workers=10**5)
    assert asked == [min(3, usable_cores()), usable_cores()]


def _golden_source(root: Path) -> Path:
    """Photos of 3 categories (one re-encoded, one copied within a category, one copied into another)
    and an engagement table with every optional column and an extra one (account)."""
    src = make_photo_tree(root / "src", {"animal": 9, "landscape": 8, "zebra": 5}, size=(40, 30))
    make_photo(src / "animal" / "big.jpg", size=(600, 300), color=(10, 200, 30))
    make_photo(src / "animal" / "copy.jpg", size=(40, 30), color=(0, 40, 0))  # = animal_00: shares its group
    make_photo(src / "zebra" / "copy.jpg", size=(40, 30), color=(23, 111, 194))  # = animal_01 in another category: skipped
    (src / "landscape" / "notes.txt").write_text("not a photo")
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    lines = ["file_name,likes,comments,followers,timestamp,caption,account"]
    lines += [f"{n},{i * 37 % 101},{i % 7 if i % 5 else ''},{1000 + i},{1600000000 + i * 3600 * (i % 4)},cap {i},acc{i % 3}" for i, n in enumerate(names)]
    (root / "table.csv").write_text("\n".join(lines) + "\n")
    return src


def _content_checksum(out: Path) -> str:
    """sha256 of what a built dataset holds: its instacli_dataset.json (less the source path and the
    version), datasets' JSON files (less the random fingerprint), each split's schema and rows."""
    import hashlib

    digest = hashlib.sha256()
    info = json.loads((out / "instacli_dataset.json").read_text())
    del info["source"], info["instacli_version"]
    digest.update(json.dumps(info, sort_keys=True).encode())
    digest.update((out / "dataset_dict.json").read_bytes())
    for split, ds in DatasetDict.load_from_disk(str(out)).items():
        digest.update((out / split / "dataset_info.json").read_bytes())
        state = json.loads((out / split / "state.json").read_text())
        del state["_fingerprint"]
        digest.update(json.dumps(state, sort_keys=True).encode())
        digest.update(ds.data.schema.to_string(show_schema_metadata=True).encode())
        for row in ds.cast_column("image", ImageFeature(decode=False)):
            row["image"] = hashlib.sha256(row["image"]["bytes"]).hexdigest() + str(row["image"]["path"])
            digest.update(json.dumps([split, row]).encode())
    return digest.hexdigest()


@pytest.mark.parametrize(("options", "checksum"), [
    ({"synthetic": "realistic", "seed": 7}, "752f6694aea4d92f4f171ed5f132858f5d1c22f29c7ba801d69af297a6bef51a"),
    ({"engagement": "table.csv", "group_pattern": r"(\d|[a-z])\.jpg$", "holdout": ["1"]}, "ae27de7225866b838d5530485718d5820b04c4a4d3f75be48f85d9c3ab2738de"),
    ({"engagement": "table.csv", "split_by": "account", "val_fraction": 0.2, "test_fraction": 0.3}, "e5b180adbf7b43309389b0576855dd06f954d3223bf787415dfb0ffa3bfba998"),
    ({"engagement": "table.csv", "split_by": "time"}, "72c82cc1b732edf06b19d1bfce4c822b56e6c87fb623b3e7c5dbe11cc3cfea21"),
], ids=["synthetic", "holdout", "by-column", "by-time"])
def test_built_dataset_is_the_one_built_before_streaming(tmp_path: Path, options: dict, checksum: str) -> None:
    """The rows, splits, schema and files of a build are those the build wrote before it streamed
    rows into Arrow (checksums computed at commit 1c0e932, which held every row and saved with
    ``save_to_disk``)."""
    src = _golden_source(tmp_path)
    if "engagement" in options:
        options = options | {"engagement": tmp_path / options["engagement"]}
    _build(src, tmp_path / "data", **options)
    assert _content_checksum(tmp_path / "data") == checksum
