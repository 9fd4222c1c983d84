"""`instacli data build` / `data info` through the real entry point: output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_photo


def test_build_and_info(run_cli, photo_tree: Path, tmp_path: Path) -> None:
    (photo_tree / "animal" / "broken.jpg").write_bytes(b"nope")
    out = tmp_path / "data"
    result = run_cli("data", "build", photo_tree, "--out", out, "--synthetic-engagement", "seed", "--seed", "5")
    assert result.code == 0, result.stderr
    assert "animal" in result.stdout and "synthetic:seed" in result.stdout
    assert "skipped 1 file(s)" in result.stdout and "build_report.json" in result.stdout

    again = run_cli("data", "build", photo_tree, "--out", out)
    assert again.code == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert run_cli("data", "build", photo_tree, "--out", out, "--overwrite", "--seed", "5", "--synthetic-engagement", "seed").code == 0

    info = run_cli("data", "info", out)
    assert info.code == 0, info.stderr
    for text in ("train", "validation", "test", "animal", "landscape", "likes", "comments", "shares", "median", "synthetic:seed"):
        assert text in info.stdout
    assert json.loads((out / "instacli_dataset.json").read_text())["fingerprint"] in info.stdout


def _empty_category(src: Path, tmp: Path) -> list[str]:
    (src / "empty").mkdir()
    return []


def _one_category(src: Path, tmp: Path) -> list[str]:
    for path in (src / "landscape").iterdir():
        path.unlink()
    (src / "landscape").rmdir()
    return []


def _table(lines: list[str]):
    def make(src: Path, tmp: Path) -> list[str]:
        rows = [f"{p.relative_to(src).as_posix()},1,1,1" for p in sorted(src.rglob("*.jpg"))]
        (tmp / "eng.csv").write_text("\n".join(["file_name,likes,comments,shares", *lines, *rows]) + "\n")
        return ["--engagement", str(tmp / "eng.csv")]

    return make


def _photo_without_row(src: Path, tmp: Path) -> list[str]:
    args = _table([])(src, tmp)
    make_photo(src / "animal" / "late.jpg")
    return args


@pytest.mark.parametrize(("arrange", "message"), [
    (_empty_category, "empty: category folder has no photos"),
    (_one_category, "need at least 2"),
    (_table(["animal/animal_00.jpg,-1,0,0"]), "eng.csv line 2: likes is negative"),
    (_table(["animal/animal_00.jpg,lots,0,0"]), "eng.csv line 2: likes is 'lots'"),
    (_table(["../secret.jpg,1,1,1"]), "eng.csv line 2: file_name '../secret.jpg' points outside SRC"),
    (_table(["animal/animal_00.jpg,5,5,5"]), "eng.csv line 3: file_name 'animal/animal_00.jpg' repeats line 2"),
    (_photo_without_row, "eng.csv: no row for photo 'animal/late.jpg'"),
])
def test_errors_exit_2_with_one_line_and_write_nothing(run_cli, photo_tree: Path, tmp_path: Path, arrange, message) -> None:
    extra = arrange(photo_tree, tmp_path)
    result = run_cli("data", "build", photo_tree, "--out", tmp_path / "data", *extra)
    assert result.code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data")]


def test_info_on_a_plain_folder_is_a_clear_error(run_cli, photo_tree: Path) -> None:
    result = run_cli("data", "info", photo_tree)
    assert result.code == 2 and "instacli_dataset.json" in result.stderr



def test_map_option_repeated_and_comma_separated(run_cli, photo_tree: Path, tmp_path: Path) -> None:
    names = sorted(p.relative_to(photo_tree).as_posix() for p in photo_tree.rglob("*.jpg"))
    table = tmp_path / "eng.jsonl"
    table.write_text("".join(json.dumps({"path": n, "like_count": i, "n_comments": 2 * i}) + "\n" for i, n in enumerate(names)))
    result = run_cli("data", "build", photo_tree, "--out", tmp_path / "data", "--engagement", table,
                     "--map", "file_name=path", "--map", "likes=like_count,comments=n_comments")
    assert result.code == 0, result.stderr
    meta = json.loads((tmp_path / "data" / "instacli_dataset.json").read_text())
    assert meta["engagement"] == "table:eng.jsonl" and meta["numeric_columns"] == ["comments"]
    bad = run_cli("data", "build", photo_tree, "--out", tmp_path / "bad", "--engagement", table, "--map", "likes")
    assert bad.code == 2 and "--map: 'likes' is not COLUMN=SOURCE_COLUMN" in bad.stderr
    twice = run_cli("data", "build", photo_tree, "--out", tmp_path / "bad", "--engagement", table, "--map", "likes=like_count",
                    "--map", "file_name=path,likes=n_comments")  # the last one won: comments were read as likes
    assert twice.code == 2 and "--map: likes is mapped twice (likes=like_count, likes=n_comments); give it once" in twice.stderr
