"""Memory flat in the number of photos (issue 12): the first decode of a split and ``data build``
hold a chunk of photos at a time, never all of them, and write exactly what they wrote before."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_photo_tree


def test_decode_cache_is_written_in_chunks_never_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from instacli import decode_cache

    monkeypatch.setenv("INSTACLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(decode_cache, "CHUNK", 2)
    photos = make_photo_tree(tmp_path / "src", {"a": 30, "b": 30}, size=(80, 60))
    encoded = [{"bytes": None, "path": str(p)} for p in sorted(photos.rglob("*.jpg"))]
    in_memory = decode_cache.decode_split(encoded, 64, None, workers=0).numpy()  # no key: decoded into memory
    whole = in_memory.nbytes  # 60 x 3 x 64 x 64 = 737 kB
    tracemalloc.start()
    try:
        cached = decode_cache.decode_split(encoded, 64, "key", workers=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < whole / 4, f"the first decode held {peak} bytes; the whole split is {whole}"
    expected = io.BytesIO()
    np.save(expected, in_memory)
    assert (tmp_path / "cache" / "decoded-key-64.npy").read_bytes() == expected.getvalue()  # the file np.save wrote before
    assert np.array_equal(cached.numpy(), in_memory)


def noisy_photos(root: Path, n: int) -> Path:
    """``root/<a|b>/*.jpg``: ``n`` distinct noisy 160x120 JPEGs (about 20 kB each, so that their bytes
    outweigh everything else a build allocates)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / "ab"[i % 2] / f"p{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(path, quality=90)
    return root


def test_build_streams_photos_through_a_spool_never_holding_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    from datasets import DatasetDict

    from instacli_datasets import build, build_dataset, load_data

    src = noisy_photos(tmp_path / "src", 300)
    stored = sum(p.stat().st_size for p in src.rglob("*.jpg"))  # kept as they are: small upright RGB JPEGs
    monkeypatch.setattr(build, "WRITE_BATCH", 20)
    monkeypatch.setattr(datasets.config, "DEFAULT_MAX_BATCH_SIZE", 20)  # save_to_disk's batches, at most 1,000 photos
    tracemalloc.start()
    try:
        report = build_dataset(src, tmp_path / "data", workers=1, synthetic="seed")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.kept_original == 300
    assert peak < stored / 3, f"the build held {peak} bytes; its photos are {stored}"
    assert not any(p.name == build.SCRATCH for p in (tmp_path / "data").rglob("*"))  # the spool is gone
    # the same rows as the in-memory path (a plain folder, still built in memory by to_dataset)
    built = DatasetDict.load_from_disk(str(tmp_path / "data"))
    in_memory, _ = load_data(src, workers=1)
    by_name = {r["file_name"]: r for r in in_memory.cast_column("image", in_memory.features["image"].__class__(decode=False))}
    rows = [r for ds in built.values() for r in ds.cast_column("image", ds.features["image"].__class__(decode=False))]
    assert len(rows) == 300
    assert all(r["image"]["bytes"] == by_name[r["file_name"]]["image"]["bytes"] and r["label"] == by_name[r["file_name"]]["label"] for r in rows)


def test_a_split_written_in_batches_is_the_table_built_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from instacli_datasets import build

    rows = [{"image": None, "label": i % 2, "file_name": f"p{i}.jpg", "likes": i, "comments": None, "shares": 3} for i in range(7)]
    photos = [bytes([i]) * (i + 1) for i in range(7)]
    monkeypatch.setattr(build, "WRITE_BATCH", 3)
    with build.Spool(tmp_path / "spool") as spool:
        streamed_rows = [r | {"image": spool.put(p)} for r, p in zip(rows, photos)]
        streamed = build.write_split(streamed_rows, ["a", "b"], build.COUNT_COLUMNS, spool, tmp_path / "split.arrow")
    in_memory = build.to_dataset([r | {"image": {"bytes": p, "path": None}} for r, p in zip(rows, photos)], ["a", "b"], build.COUNT_COLUMNS)
    assert streamed.data.table.equals(in_memory.data.table, check_metadata=True)
    assert streamed.features == in_memory.features


def test_a_build_holds_a_few_hundred_bytes_per_photo(tmp_path: Path) -> None:
    """The rows of a build are held as columns (no dict, Path or hex hash per photo) until they are
    written: 490 bytes of Python objects per photo here, where a build held 2.2 kB (1.5 kB in the
    scale benchmark: 150 MB for 100,000 photos)."""
    from instacli_datasets import build

    def held_by_collect(n: int, name: str) -> int:
        src = make_photo_tree(tmp_path / name, {"a": n // 2, "b": n - n // 2}, size=(8, 8))
        tracemalloc.start()
        try:
            with build.Spool(tmp_path / f"{name}.spool") as spool:
                collected = build.collect(build.open_source(src), synthetic="seed", workers=1, spool=spool)
                held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert collected.kept_original == n
        return held

    held_by_collect(200, "warm-up")  # the first build's imports and caches
    per_photo = (held_by_collect(2200, "large") - held_by_collect(200, "small")) / 2000
    assert per_photo < 700, f"a build holds {per_photo:.0f} bytes per photo"


def test_a_build_never_copies_a_split_with_save_to_disk(photo_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each split's rows go straight into its saved Arrow file; ``save_to_disk`` only lays out empty
    splits. It copied every split from a first Arrow file, which it read memory-mapped: the build's
    memory grew by the whole dataset."""
    from datasets import Dataset

    from instacli_datasets import build_dataset

    saved: list[int] = []
    real = Dataset.save_to_disk
    monkeypatch.setattr(Dataset, "save_to_disk", lambda self, *args, **kwargs: (saved.append(len(self)), real(self, *args, **kwargs))[1])
    report = build_dataset(photo_tree, tmp_path / "data", workers=1)
    assert saved == [0, 0, 0] and report.n_images == 20
