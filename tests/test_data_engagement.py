"""Engagement tables for data build: CSV/JSONL/Parquet, aliases, --map, optional columns, metadata
folders and validation errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from datasets import Value

from tests.conftest import built_rows, make_photo
from instacli.errors import InstacliError
from instacli_datasets import build_dataset, load_data


def _names(src: Path) -> list[str]:
    return sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))



def _write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_csv_with_distribution_alias_and_missing_values(photo_tree: Path, tmp_path: Path) -> None:
    names = _names(photo_tree)
    lines = [f"{n},{i * 10},{'' if i == 0 else i},{i + 100}" for i, n in enumerate(names)]
    table = _write_csv(tmp_path / "eng.csv", "file_name,likes,comments,distribution", [*lines, "gone/extra.jpg,1,1,1"])
    report = build_dataset(photo_tree, tmp_path / "data", engagement=table, workers=1)
    assert report.engagement == "table:eng.csv" and report.unused_rows == ["gone/extra.jpg"]
    rows = built_rows(tmp_path / "data")
    assert rows[names[3]]["likes"] == 30 and rows[names[3]]["comments"] == 3 and rows[names[3]]["shares"] == 103
    assert rows[names[0]]["comments"] is None and rows[names[0]]["likes"] == 0
    _, info = load_data(tmp_path / "data", split="validation")
    assert info.engagement == "table:eng.csv" and info.numeric_columns == ["comments", "shares"]


def test_jsonl_with_optional_columns(photo_tree: Path, tmp_path: Path) -> None:
    table = tmp_path / "eng.jsonl"
    with table.open("w") as handle:
        for i, name in enumerate(_names(photo_tree)):
            handle.write(json.dumps({
                "file_name": "./" + name, "likes": i, "comments": 1.0, "shares": "2", "followers": None if i % 2 else 1000 + i,
                "caption": f"photo {i}", "timestamp": "2024-01-02T03:04:05Z" if i == 0 else 1700000000 + i,
            }) + "\n")
    build_dataset(photo_tree, tmp_path / "data", engagement=table, workers=1)
    ds, info = load_data(tmp_path / "data", split="train")
    assert ds.features["followers"] == Value("int64") and ds.features["timestamp"] == Value("int64")
    assert ds.features["caption"] == Value("string")
    rows = built_rows(tmp_path / "data")
    first = rows[_names(photo_tree)[0]]
    assert first["timestamp"] == 1704164645 and first["caption"] == "photo 0" and first["followers"] == 1000
    assert rows[_names(photo_tree)[1]]["followers"] is None
    assert info.numeric_columns == ["comments", "shares", "followers"]


def test_parquet_table_and_column_map(photo_tree: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = _names(photo_tree)
    pq.write_table(pa.table({"path": names, "like_count": list(range(len(names)))}), tmp_path / "eng.parquet")
    build_dataset(photo_tree, tmp_path / "data", engagement=tmp_path / "eng.parquet", workers=1,
                  column_map={"file_name": "path", "likes": "like_count"})
    rows = built_rows(tmp_path / "data")
    assert [rows[n]["likes"] for n in names] == list(range(len(names)))
    assert {rows[n]["shares"] for n in names} == {None}


def test_metadata_folder_convention(tmp_path: Path) -> None:
    src = tmp_path / "src"
    lines = []
    for i in range(8):
        make_photo(src / "photos" / f"p{i}.png", size=(12, 12), color=(i * 30, 0, 0))
        lines.append(f"photos/p{i}.png,{'cat' if i % 2 else 'dog'},{i}")
    _write_csv(src / "metadata.csv", "file_name,label,likes", lines)
    build_dataset(src, tmp_path / "data", workers=1)
    ds, info = load_data(tmp_path / "data", split="train")
    assert info.class_names == ["cat", "dog"] and info.engagement == "table:metadata.csv"
    rows = built_rows(tmp_path / "data")
    assert rows["photos/p3.png"]["label"] == 0 and rows["photos/p3.png"]["likes"] == 3


@pytest.mark.parametrize(("body", "message"), [
    ("{first},-5,1,1", r"eng\.csv line 2: likes is negative"),
    ("{first},many,1,1", r"eng\.csv line 2: likes is 'many', not a number"),
    ("{first},1.5,1,1", r"eng\.csv line 2: likes is '1\.5', not a whole number"),
    ("{first},1,1,1\n{first},2,2,2", r"eng\.csv line 3: file_name 'animal/animal_00\.jpg' repeats line 2"),
    ("../{first},1,1,1", r"eng\.csv line 2: file_name '\.\./animal/animal_00\.jpg' points outside SRC"),
    ("/etc/{first},1,1,1", r"eng\.csv line 2: file_name '/etc/animal/animal_00\.jpg' is an absolute path"),
    ("{first},1,1,1", r"eng\.csv: no row for photo 'animal/animal_01\.jpg' \(and 18 more\)"),
])
def test_bad_tables_are_one_line_errors_and_write_nothing(photo_tree: Path, tmp_path: Path, body: str, message: str) -> None:
    table = _write_csv(tmp_path / "eng.csv", "file_name,likes,comments,shares", [body.format(first="animal/animal_00.jpg")])
    with pytest.raises(InstacliError, match=message) as caught:
        build_dataset(photo_tree, tmp_path / "data", engagement=table, workers=1)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "data").exists()


def test_table_without_likes_column_or_file_name(photo_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(InstacliError, match="no 'likes' column"):
        build_dataset(photo_tree, tmp_path / "d", engagement=_write_csv(tmp_path / "a.csv", "file_name,comments", ["x.jpg,1"]))
    with pytest.raises(InstacliError, match="no 'file_name' column"):
        build_dataset(photo_tree, tmp_path / "d", engagement=_write_csv(tmp_path / "b.csv", "name,likes", ["x.jpg,1"]))
    with pytest.raises(InstacliError, match="both mean shares"):
        build_dataset(photo_tree, tmp_path / "d", engagement=_write_csv(tmp_path / "c.csv", "file_name,likes,distribution,distributions", ["x.jpg,1,1,1"]))
    with pytest.raises(InstacliError, match="looks ';'-separated: save it comma-separated"):  # Excel's CSV in many locales
        build_dataset(photo_tree, tmp_path / "d", engagement=_write_csv(tmp_path / "e.csv", "file_name;likes", ["x.jpg;1"]))


def test_a_table_or_config_that_is_a_fifo_or_a_folder_says_so(photo_tree: Path, tmp_path: Path, run_cli) -> None:
    """A FIFO or a folder given as the table or --config was "no such file" / "config file not found"."""
    os.mkfifo(tmp_path / "fifo.csv")
    (tmp_path / "folder.toml").mkdir()
    result = run_cli("data", "build", photo_tree, "--out", tmp_path / "d", "--engagement", tmp_path / "fifo.csv")
    assert result.code == 2 and result.stderr.strip() == f"error: {tmp_path / 'fifo.csv'}: not a regular file (a FIFO); check the path"
    result = run_cli("train", "--data", tmp_path, "--out", tmp_path / "run", "--config", tmp_path / "folder.toml")
    assert result.code == 2 and result.stderr.strip() == f"error: {tmp_path / 'folder.toml'}: not a regular file (a folder); pass a TOML file to --config"
    assert not (tmp_path / "d").exists() and not (tmp_path / "run").exists()

def _wide_table(path: Path, n: int, bad: dict[int, str] | None = None) -> Path:
    """``n`` rows of every column; row ``i`` of ``bad`` gets that raw line instead."""
    lines = [f'a/p{i}.jpg,{i * 7},{"" if i % 5 == 0 else " NA " if i % 5 == 1 else i % 50},3,{1000 + i},"caption, ""{i}""",{1_700_000_000 + i},o{i % 9}'
             for i in range(n)]
    for i, line in (bad or {}).items():
        lines[i] = line
    return _write_csv(path, "file_name,likes,comments,shares,followers,caption,timestamp,owner", lines)


def _read_both_ways(path: Path, keep: set[str], monkeypatch: pytest.MonkeyPatch):
    """``read_table`` column-wise (when it applies) and row by row: each a Table or the error's text."""
    from instacli_datasets import engagement

    def read():
        try:
            return engagement.read_table(path, keep=keep)
        except InstacliError as exc:
            return str(exc)

    column_wise = read()
    with monkeypatch.context() as m:
        m.setattr(engagement, "_kept_records", lambda *args: None)
        return column_wise, read()


def test_a_long_clean_table_is_read_column_wise_with_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.csv
    import pyarrow.parquet

    from instacli_datasets import engagement

    csv_path = _wide_table(tmp_path / "eng.csv", 3000)
    parquet_path = tmp_path / "eng.parquet"
    pyarrow.parquet.write_table(pyarrow.csv.read_csv(csv_path), parquet_path)  # typed: int64 counts, null comments
    monkeypatch.setattr(engagement, "_BATCH_ROWS", 700)  # several Parquet batches
    keep = {f"a/p{i}.jpg" for i in range(0, 3000, 30)} | {"a/missing.jpg"}
    parsed: list[str] = []
    real = engagement._parse_record
    monkeypatch.setattr(engagement, "_parse_record", lambda *args: (parsed.append(args[1]), real(*args))[1])
    for path in (csv_path, parquet_path):
        parsed.clear()
        column_wise = engagement.read_table(path, keep=keep)
        assert len(parsed) == 100  # only the rows of the photos at hand were parsed one by one
        row_wise = _read_both_ways(path, keep, monkeypatch)[1]
        assert column_wise == row_wise  # rows, line numbers, unused names and count, extras
    assert column_wise.where["a/p2970.jpg"] == "row 2971" and column_wise.n_unused == 2900 and len(column_wise.unused) == engagement.LISTED_UNUSED


BAD_LINES = {
    "negative count late": {2500: "a/p2500.jpg,-3,1,1,1,x,1,o"},
    "iso date": {10: "a/p10.jpg,1,1,1,1,x,2024-05-01T10:00:00,o"},
    "quoted line break in a kept row": {30: 'a/p30.jpg,1,1,1,1,"two\nlines",1,o'},
    "absolute file name": {2999: "/etc/p.jpg,1,1,1,1,x,1,o"},
    "ragged row": {1200: "a/p1200.jpg,1,1"},
    "float count": {60: "a/p60.jpg,2.0,1,1,1,x,1,o"},
    "repeated kept row": {31: "a/p30.jpg,1,1,1,1,x,1,o"},
}


@pytest.mark.parametrize("bad", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_table_with_a_value_to_parse_or_report_reads_as_row_by_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: dict[int, str]) -> None:
    path = _wide_table(tmp_path / "eng.csv", 3000, bad)
    column_wise, row_wise = _read_both_ways(path, {f"a/p{i}.jpg" for i in range(0, 3000, 30)}, monkeypatch)
    assert column_wise == row_wise
