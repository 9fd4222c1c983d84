"""Hostile inputs (issue 15): every file is made here, in tmp_path, and must end as a clear one-line
error or a reported (skipped / error-row) file, with the rest of the folder still processed.

Checks about memory or hangs run in a child Python whose address space may grow by only
:data:`CAP_MB` after its imports, under a timeout: a regression fails the test (MemoryError,
timeout) instead of exhausting the machine.
"""

from __future__ import annotations

import csv
import io
import json
import lzma
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import TINY_VIT, make_photo, make_photo_tree
from instacli.errors import InstacliError
from instacli.photo_files import decode_square
from instacli.photo_files import NOT_UTF8, UnusableFile, read_text_limited
from instacli_datasets import build_dataset, load_data
from instacli_datasets.engagement import read_table
from instacli_datasets.photo_bytes import encode_photo

#: How much a capped child may allocate beyond its imports: enough for the work, far below a regression.
CAP_MB = 300
POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"
#: Start of an HEIC file (an ISO-BMFF ``ftyp`` box of brand heic); no plugin here decodes it.
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)


def run_capped(code: str, imports: str, timeout: float = 120, cap_mb: int = CAP_MB) -> dict:
    """Run ``code`` (which sets ``result``) in a child Python, after ``imports``, capped at its size then
    + ``cap_mb`` and at ``timeout`` seconds; returns its ``result`` (JSON)."""
    script = textwrap.dedent("""
        import json, re, resource
        {imports}
        vm = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + {cap} * 2**20, vm + {cap} * 2**20))
    """).format(imports=imports, cap=cap_mb) + textwrap.dedent(code) + "\nprint('RESULT' + json.dumps(result))\n"
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=child_env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.rsplit("RESULT", 1)[1])


def add_hostile_files(folder: Path) -> dict[str, str]:
    """FIFO, /dev/zero, 3 GB sparse file, 1×200,000 PNG, PostScript, HEIC: file name → words of its expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    with open(folder / "big.jpg", "wb") as handle:
        handle.truncate(3 * 2**30)  # sparse: no disk used
    Image.new("L", (1, 200_000)).save(folder / "wide.png")
    (folder / "script.jpg").write_bytes(POSTSCRIPT)
    (folder / "phone.heic").write_bytes(HEIC)
    return {"fifo.jpg": "FIFO", "zero.jpg": "device", "big.jpg": "larger than 50 MB", "wide.png": "aspect ratio",
            "script.jpg": "supported format", "phone.heic": "pillow-heif"}


def add_non_utf8_photo(folder: Path) -> str:
    """A valid JPEG whose name holds the Latin-1 byte é (not UTF-8); returns how it is shown."""
    make_photo(folder / "tmp.jpg")
    os.rename(folder / "tmp.jpg", os.fsencode(folder) + b"/caf\xe9.jpg")
    return "caf\\xe9.jpg"


# --- 1, 2, 3: memory, hangs and formats, through data build and evaluate --data FOLDER -----------------


def test_build_and_plain_folder_skip_hostile_files_within_memory_and_time(tmp_path: Path) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 4, "landscape": 4})
    expected = {f"animal/{name}": words for name, words in add_hostile_files(src / "animal").items()}
    result = run_capped(f"""
        from instacli_datasets import build_dataset, load_data
        report = build_dataset({str(src)!r}, {str(tmp_path / 'data')!r}, workers=1)
        dataset, info = load_data({str(src)!r}, workers=1)
        result = {{"built": report.n_images, "skipped": {{s.file: s.reason for s in report.skipped}},
                  "plain": len(dataset), "plain_skipped": {{s.file: s.reason for s in info.skipped}}}}
    """, "import datasets, pyarrow.parquet, instacli_datasets.build")
    assert result["built"] == result["plain"] == 8
    for skipped in (result["skipped"], result["plain_skipped"]):
        assert set(skipped) == set(expected)
        for file, words in expected.items():
            assert words in skipped[file] and "\n" not in skipped[file], (file, skipped[file])
    listed = json.loads((tmp_path / "data" / "build_report.json").read_text())["skipped"]
    assert {item["file"] for item in listed} == set(expected)


def test_extreme_aspect_ratio_is_refused_and_crop_happens_before_resize(tmp_path: Path) -> None:
    Image.new("L", (1, 200_000)).save(tmp_path / "wide.png")
    assert (tmp_path / "wide.png").stat().st_size < 2000
    Image.new("RGB", (40, 1800), (10, 200, 30)).save(tmp_path / "tall.png")  # 1:45, a (very) long panorama
    result = run_capped(f"""
        from instacli.photo_files import decode_square
        from instacli.photo_files import UnusableFile
        try:
            decode_square({str(tmp_path / 'wide.png')!r}, 512)
            refused = ""
        except UnusableFile as exc:
            refused = str(exc)
        tall = decode_square({str(tmp_path / 'tall.png')!r}, 512)  # upscaled whole it would be 512×23,040
        result = {{"refused": refused, "tall": [list(tall.shape), tall.reshape(3, -1).mean(1).round().tolist()]}}
    """, "import instacli.decode_cache")
    assert "1×200000 pixels: an aspect ratio over 50:1" in result["refused"]
    assert result["tall"] == [[3, 512, 512], [10.0, 200.0, 30.0]]
    assert "aspect ratio" in encode_photo(str(tmp_path / "wide.png"), 256)


def test_xz_metadata_bomb_is_refused_and_the_other_posts_are_read(tmp_path: Path) -> None:
    src = tmp_path / "download" / "someone"
    for stem in ("2024-01-01_10-00-00_UTC", "2024-01-02_10-00-00_UTC"):
        make_photo(src / f"{stem}.jpg")
        node = {"node": {"shortcode": stem[:10], "edge_media_preview_like": {"count": 5}, "taken_at_timestamp": 1704103200},
                "instaloader": {"node_type": "Post"}}
        (src / f"{stem}.json.xz").write_bytes(lzma.compress(json.dumps(node).encode()))
    make_photo(src / "2024-01-03_10-00-00_UTC.jpg")
    stream = lzma.compress(bytes(16 * 2**20), preset=0)  # 16 MB of zeros in a few KB; 25 streams in a row: 400 MB
    (src / "2024-01-03_10-00-00_UTC.json.xz").write_bytes(stream * 25)
    assert (src / "2024-01-03_10-00-00_UTC.json.xz").stat().st_size < 200_000
    result = run_capped(f"""
        from instacli_datasets.instaloader import discover_instaloader
        source = discover_instaloader({str(tmp_path / 'download')!r})
        result = {{"photos": [p.file_name for p in source.photos], "skipped": {{s.file: s.reason for s in source.skipped}}}}
    """, "import instacli_datasets.instaloader")
    assert result["photos"] == ["someone/2024-01-01_10-00-00_UTC.jpg", "someone/2024-01-02_10-00-00_UTC.jpg"]
    assert "unpacks to more than 50 MB" in result["skipped"]["someone/2024-01-03_10-00-00_UTC.json.xz"]


def test_max_file_size_is_configurable_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)).save(photo)  # 1.4 MB
    (tmp_path / "meta.json.xz").write_bytes(lzma.compress(b'{"node": {}}' + b" " * 3 * 2**20))
    monkeypatch.setenv("INSTACLI_MAX_FILE_MB", "1")
    assert encode_photo(str(photo), 256) == "larger than 1 MB (1.4 MB); shrink it or raise INSTACLI_MAX_FILE_MB"
    monkeypatch.setenv("INSTACLI_MAX_FILE_MB", "2")
    with pytest.raises(UnusableFile, match="unpacks to more than 2 MB"):
        read_text_limited(tmp_path / "meta.json.xz")
    monkeypatch.setenv("INSTACLI_MAX_FILE_MB", "lots")
    with pytest.raises(InstacliError, match="INSTACLI_MAX_FILE_MB=lots: not a positive number"):
        encode_photo(str(photo), 256)


def test_postscript_named_jpg_never_reaches_ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import EpsImagePlugin

    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(self))
    (tmp_path / "x.jpg").write_bytes(POSTSCRIPT)
    assert encode_photo(str(tmp_path / "x.jpg"), 256).startswith("unreadable: not a photo in a supported format (JPEG, PNG")
    with pytest.raises(UnusableFile, match="supported format"):
        decode_square(tmp_path / "x.jpg", 32)
    assert opened == []


@pytest.mark.skipif("AVIF" not in Image.registered_extensions().values(), reason="this Pillow has no AVIF plugin")
def test_avif_photo_is_read_where_a_plugin_exists(tmp_path: Path) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 3, "landscape": 3})
    make_photo(src / "animal" / "new.avif", (40, 30))
    report = build_dataset(src, tmp_path / "data", workers=1)
    assert report.n_images == 7 and report.skipped == []


# --- 4: pixels ----------------------------------------------------------------------------------------


def test_sixteen_bit_and_float_images_keep_their_shades(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    Image.fromarray((ramp / 65535).astype(np.float32), "F").save(tmp_path / "float.tiff")
    expected = np.round(np.linspace(0, 255, 64))
    for name in ("deep.png", "float.tiff"):
        square = decode_square(tmp_path / name, 64)
        assert np.abs(square[0, 32].astype(int) - expected).max() <= 2, name  # a gradient, not solid white
        stored = encode_photo(str(tmp_path / name), 256)
        decoded = np.asarray(Image.open(io.BytesIO(stored.data)).convert("L"), dtype=int)
        assert np.abs(decoded[32] - expected).max() <= 3, name


def test_a_huge_transparent_or_sixteen_bit_png_decodes_in_bounded_memory(tmp_path: Path) -> None:
    """A 140 KB PNG of 6,000×6,000 RGBA pixels took 850 MB to decode (to_rgb's full-size copies), a
    16-bit one 570 MB, and data build 700 MB to store the RGBA one; it is now reduced in the file's own
    mode first. Hidden colour under transparent pixels still turns white, and the 16-bit shades are kept."""
    rgba = Image.new("RGBA", (6000, 6000), (0, 255, 0, 0))  # transparent green: must come out white
    rgba.paste((255, 0, 0, 255), (2000, 2000, 4000, 4000))
    rgba.save(tmp_path / "clear.png")
    Image.new("I;16", (6000, 6000), 32896).save(tmp_path / "deep.png")  # 32896 / 257 = 128
    result = run_capped(f"""
        import io
        import numpy as np
        from PIL import Image
        from instacli.photo_files import decode_square
        from instacli_datasets.photo_bytes import encode_photo
        clear, deep = decode_square({str(tmp_path / 'clear.png')!r}, 224), decode_square({str(tmp_path / 'deep.png')!r}, 224)
        stored = np.asarray(Image.open(io.BytesIO(encode_photo({str(tmp_path / 'clear.png')!r}, 256).data))).transpose(2, 0, 1)
        result = {{"corner": clear[:, 5, 5].tolist(), "centre": clear[:, 112, 112].tolist(), "deep": sorted(set(deep.ravel().tolist())),
                  "stored": [list(stored.shape), stored[:, 5, 5].tolist(), (stored[:, 128, 128] // 8).tolist()]}}
    """, "import instacli.photo_files, instacli_datasets.photo_bytes", cap_mb=600)
    assert result == {"corner": [255, 255, 255], "centre": [255, 0, 0], "deep": [128], "stored": [[3, 256, 256], [255, 255, 255], [31, 0, 0]]}


# --- 5: names that are not UTF-8 ----------------------------------------------------------------------


def test_non_utf8_file_name_is_reported_and_the_build_goes_on(tmp_path: Path, run_cli) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 3, "landscape": 3})
    shown = add_non_utf8_photo(src / "animal")
    result = run_cli("data", "build", src, "--out", tmp_path / "data", "--workers", "1")
    assert result.code == 0, result.stderr
    listed = json.loads((tmp_path / "data" / "build_report.json").read_text())["skipped"]
    assert listed == [{"file": f"animal/{shown}", "reason": NOT_UTF8}]
    dataset, info = load_data(src, workers=1)
    assert len(dataset) == 6 and [(s.file, s.reason) for s in info.skipped] == [(f"animal/{shown}", NOT_UTF8)]


def test_non_utf8_name_in_a_metadata_layout_is_skipped_not_fatal(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i, label in enumerate(["a", "a", "b", "b"]):
        make_photo(src / f"p{i}.jpg", color=(i * 60, 10, 10))
    (src / "metadata.csv").write_text("file_name,label\n" + "".join(f"p{i}.jpg,{l}\n" for i, l in enumerate("aabb")))
    shown = add_non_utf8_photo(src)
    report = build_dataset(src, tmp_path / "data", workers=1)
    assert report.n_images == 4 and [(s.file, s.reason) for s in report.skipped] == [(shown, NOT_UTF8)]


# --- 6: counts beyond int64 ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, record, words", [
    (".csv", {"likes": "1e308"}, "likes is '1e308', larger than any count"),
    (".csv", {"likes": "99999999999999999999"}, "larger than any count"),
    (".jsonl", {"likes": 2**70}, "larger than any count"),
    (".parquet", {"likes": 2**64 - 1}, "larger than any count"),
    (".csv", {"likes": "3", "followers": "1e308"}, "followers is '1e308', larger than any count"),
    (".jsonl", {"likes": 3, "timestamp": 1e20}, "timestamp is '1e+20', not a time between the years 1 and 9999"),
    (".csv", {"likes": "3", "timestamp": "9" * 400}, "not a time between the years 1 and 9999"),
])
def test_counts_beyond_int64_are_refused_with_file_and_line(tmp_path: Path, suffix: str, record: dict, words: str) -> None:
    rows = [{"file_name": "a.jpg", **{k: (1 if isinstance(v, int) else "1") for k, v in record.items()}}, {"file_name": "b.jpg", **record}]
    path = tmp_path / f"table{suffix}"
    if suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.table({"file_name": ["a.jpg", "b.jpg"], "likes": pa.array([1, 2**64 - 1], pa.uint64())}), path)
    where = "row 2" if suffix == ".parquet" else "line 3" if suffix == ".csv" else "line 2"
    with pytest.raises(InstacliError, match=f"table{suffix} {where}: .*{words}".replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        read_table(path)


def test_a_too_large_count_stops_the_build_with_one_line(tmp_path: Path, run_cli) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 2, "landscape": 2})
    names = ["animal/animal_00.jpg", "animal/animal_01.jpg", "landscape/landscape_00.jpg", "landscape/landscape_01.jpg"]
    (tmp_path / "e.csv").write_text("file_name,likes\n" + "".join(f"{n},{'1e308' if i == 2 else 5}\n" for i, n in enumerate(names)))
    result = run_cli("data", "build", src, "--out", tmp_path / "data", "--engagement", tmp_path / "e.csv")
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "e.csv line 4: likes is '1e308', larger than any count" in result.stderr


# --- 12 and 13: folder structure, tables ----------------------------------------------------------------


def test_symlinked_folders_that_loop_or_leave_src_are_not_followed(tmp_path: Path) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 3, "landscape": 3})
    (src / "self").symlink_to(".")
    (src / "animal" / "up").symlink_to("..")
    make_photo_tree(tmp_path / "elsewhere", {"x": 2})
    (src / "landscape" / "outside").symlink_to(tmp_path / "elsewhere")
    (src / "landscape" / "inside").symlink_to(src / "animal" / "deep")  # inside SRC: followed
    make_photo(src / "animal" / "deep" / "d.jpg", color=(1, 2, 3))
    report = build_dataset(src, tmp_path / "data", workers=1)
    assert report.class_names == ["animal", "landscape"]
    reasons = {s.file: s.reason for s in report.skipped}
    assert "a loop" in reasons["self"] and "a loop" in reasons["animal/up"]
    assert "outside the source folder" in reasons["landscape/outside"]
    assert reasons["landscape/inside/d.jpg"] == "same picture as animal/deep/d.jpg (category animal); keep one copy"
    assert report.n_images == 7 and len(reasons) == 4


def test_metadata_row_through_a_folder_symlink_out_of_src_is_not_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i, label in enumerate("aabb"):
        make_photo(src / f"p{i}.jpg", color=(i * 60, 10, 10))
    make_photo(tmp_path / "private" / "secret.jpg")
    (src / "link").symlink_to(tmp_path / "private")
    (src / "metadata.csv").write_text("file_name,label\n" + "".join(f"p{i}.jpg,{l}\n" for i, l in enumerate("aabb")) + "link/secret.jpg,a\n")
    report = build_dataset(src, tmp_path / "data", workers=1)
    assert report.n_images == 4
    assert {(s.file, s.reason) for s in report.skipped} == {("link", "symlink to a folder outside the source folder; not followed"),
                                                             ("link/secret.jpg", "in a symlinked folder outside the source folder; not read")}


def test_duplicate_pictures_share_a_split_or_are_skipped_across_categories(tmp_path: Path) -> None:
    from tests.conftest import built_rows

    src = make_photo_tree(tmp_path / "src", {"animal": 10, "landscape": 10})
    picture = (src / "animal" / "animal_03.jpg").read_bytes()
    for i in range(4):
        (src / "animal" / f"copy_{i}.jpg").write_bytes(picture)
    (src / "landscape" / "stolen.jpg").write_bytes(picture)
    report = build_dataset(src, tmp_path / "data", workers=1)
    assert [(s.file, s.reason) for s in report.skipped] == [("landscape/stolen.jpg", "same picture as animal/animal_03.jpg (category animal); keep one copy")]
    rows = built_rows(tmp_path / "data")
    assert len({rows[n]["split"] for n in ["animal/animal_03.jpg", *(f"animal/copy_{i}.jpg" for i in range(4))]}) == 1


def test_unreadable_sub_folder_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 3, "landscape": 3})
    make_photo(src / "animal" / "locked" / "hidden.jpg")
    real_scandir = os.scandir

    def scandir(path):  # root ignores permissions, so a chmod 000 folder would still be read here
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = build_dataset(src, tmp_path / "data", workers=1)
    assert [(s.file, s.reason) for s in report.skipped] == [("animal/locked", "unreadable folder (Permission denied); its files were not read")]


@pytest.mark.parametrize("suffix, content", [
    (".csv", "file_name,likes,Likes\na.jpg,1,2\n"),
    (".csv", "file_name,likes,likes\na.jpg,1,2\n"),
    (".jsonl", '{"file_name": "a.jpg", "likes": 1, "likes": 2}\n'),
    (".parquet", None),
])
def test_columns_that_repeat_or_differ_only_in_case_are_refused(tmp_path: Path, suffix: str, content: str | None) -> None:
    path = tmp_path / f"t{suffix}"
    if content is None:
        pq.write_table(pa.Table.from_arrays([pa.array(["a.jpg"]), pa.array([1]), pa.array([2])], names=["file_name", "likes", "LIKES"]), path)
    else:
        path.write_text(content)
    with pytest.raises(InstacliError, match="repeat"):
        read_table(path)


@pytest.mark.parametrize("suffix, old_posts", [(".csv", 150_000), (".jsonl", 1_000), (".parquet", 1_000)])
def test_a_huge_engagement_table_keeps_only_the_rows_of_the_photos(tmp_path: Path, suffix: str, old_posts: int) -> None:
    """An account's whole history beside 4 photos: the build keeps 4 rows and lists the first 100 of
    the others. It kept every row and listed them all (1.1 GB and a 45 MB report for a 50 MB table;
    150,000 rows ran out of the 100 MB cap here). The other formats show the same with fewer rows."""
    src = make_photo_tree(tmp_path / "src", {"animal": 2, "landscape": 2})
    names = [*(p.relative_to(src).as_posix() for p in sorted(src.rglob("*.jpg"))), *(f"old/post_{i:06d}.jpg" for i in range(old_posts))]
    table = tmp_path / f"history{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table({"file_name": names, "likes": list(range(len(names))), "caption": [f"post {i}" for i in range(len(names))]}), table)
    elif suffix == ".csv":
        table.write_text("file_name,likes,caption\n" + "".join(f"{n},{i},caption of post {i}\n" for i, n in enumerate(names)))
    else:
        table.write_text("".join(json.dumps({"file_name": n, "likes": i, "caption": f"post {i}"}) + "\n" for i, n in enumerate(names)))
    result = run_capped(f"""
        from instacli_datasets import build_dataset
        report = build_dataset({str(src)!r}, {str(tmp_path / 'data')!r}, engagement={str(table)!r}, workers=1, val_fraction=0.25, test_fraction=0.25)
        result = [report.n_images + len(report.skipped), report.n_unused, report.unused_rows[:2]]
    """, "import datasets, pyarrow.parquet, instacli_datasets.build", cap_mb=100)
    assert result == [4, old_posts, ["old/post_000000.jpg", "old/post_000001.jpg"]]
    written = json.loads((tmp_path / "data" / "build_report.json").read_text())
    assert len(written["unused_table_rows"]) == 100 and written["unused_table_row_count"] == old_posts


def test_unrelated_repeated_columns_and_exact_map_stay_accepted(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("file_name,likes,Likes,note,note\na.jpg,1,2,x,y\n")
    assert read_table(path, {"likes": "Likes"}).rows["a.jpg"]["likes"] == 2


# --- predict: the same files, as error rows -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli.settings import TrainSettings
    from instacli.training import train

    root = tmp_path_factory.mktemp("hostile-run")
    make_photo_tree(root / "src", {"animal": 6, "landscape": 6})
    build_dataset(root / "src", root / "data", synthetic="seed", workers=1)
    train(TrainSettings(data=root / "data", out=root / "run", encoder_options=TINY_VIT, epochs=1, batch_size=8, warmup_epochs=0))
    return root / "run"


def test_predict_gives_every_hostile_file_an_error_row_within_memory_and_time(tiny_run: Path, tmp_path: Path) -> None:
    folder = make_photo_tree(tmp_path / "in", {"good": 3})
    expected = {f"bad/{name}": words for name, words in add_hostile_files(folder / "bad").items()}
    expected[f"good/{add_non_utf8_photo(folder / 'good')}"] = NOT_UTF8
    make_photo(folder / "=HYPERLINK(1).jpg")
    (folder / "good" / "again").symlink_to("..")
    expected["good/again"] = "a loop"
    out = tmp_path / "p.csv"
    result = run_capped(f"""
        from pathlib import Path
        from instacli.prediction import predict_folder
        summary = predict_folder(Path({str(tiny_run)!r}), Path({str(folder)!r}), Path({str(out)!r}), workers=0)
        result = [summary.scored, summary.failed]
    """, "import instacli.prediction, instacli_datasets, instacli_plugins")
    assert result == [4, len(expected)]
    rows = {r["file"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert rows["'=HYPERLINK(1).jpg"]["error"] == "" and rows["'=HYPERLINK(1).jpg"]["label"] in ("animal", "landscape")
    for file, words in expected.items():
        assert words in rows[file]["error"], (file, rows[file]["error"])
    assert all(not rows[f"good/good_{i:02d}.jpg"]["error"] for i in range(3))


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_a_folder_of_only_unreadable_photos_says_why(tiny_run: Path, tmp_path: Path, run_cli, command: str) -> None:
    """A folder of iPhone photos was 'none of the 2 files could be read as an image', without the
    reason (no HEIC plugin) that each file's error row would have given."""
    for name in ("a.heic", "b.heic"):
        (tmp_path / "phone" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "phone" / name).write_bytes(HEIC)
    result = run_cli(command, tiny_run, tmp_path / "phone", "--out", tmp_path / ("p.csv" if command == "predict" else "why"))
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "none of the 2 files could be read as an image (e.g. a.heic: unreadable" in result.stderr and "pillow-heif" in result.stderr
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "why").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_predict_writes_non_utf8_names_escaped_in_every_format(tiny_run: Path, tmp_path: Path, suffix: str) -> None:
    from instacli.prediction import predict_folder

    folder = make_photo_tree(tmp_path / "in", {"x": 2})
    shown = add_non_utf8_photo(folder)
    summary = predict_folder(tiny_run, folder, tmp_path / f"p{suffix}", workers=0)
    rows = ([json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()] if suffix == ".jsonl"
            else pq.read_table(tmp_path / "p.parquet").to_pylist())
    assert (summary.scored, summary.failed) == (2, 1)
    assert {r["file"]: r["error"] for r in rows if r["error"]} == {shown: NOT_UTF8}


def test_predict_metadata_keyed_by_a_bare_name_shared_by_two_photos_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    from instacli.prediction import predict_folder

    make_photo(tmp_path / "in" / "d1" / "p.jpg")
    make_photo(tmp_path / "in" / "d2" / "p.jpg")
    (tmp_path / "meta.csv").write_text("file_name,comments,shares\np.jpg,1,2\n")
    with pytest.raises(InstacliError, match="row 'p.jpg' would apply to both d1/p.jpg and d2/p.jpg"):
        predict_folder(tiny_run, tmp_path / "in", tmp_path / "p.csv", metadata=tmp_path / "meta.csv", workers=0)
    (tmp_path / "meta.csv").write_text("file_name,comments,shares\nd1/p.jpg,1,2\np.jpg,3,4\n")  # p.jpg now serves d2 alone
    assert predict_folder(tiny_run, tmp_path / "in", tmp_path / "p.csv", metadata=tmp_path / "meta.csv", workers=0).scored == 2


def test_an_empty_photo_file_is_reported_as_empty(tmp_path: Path) -> None:
    """A 0-byte file (an interrupted copy) was "not a photo in a supported format"."""
    (tmp_path / "x.jpg").write_bytes(b"")
    assert encode_photo(str(tmp_path / "x.jpg"), 256) == "unreadable: empty file (0 bytes); copy or download it again"
    with pytest.raises(UnusableFile, match="empty file"):
        decode_square(tmp_path / "x.jpg", 32)
