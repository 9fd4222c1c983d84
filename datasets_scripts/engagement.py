"""Reading per-photo tables (engagement counts, labels, captions) from CSV, JSONL or Parquet.

A table is keyed by ``file_name``: the photo's path relative to the source folder, posix form.
Every value is checked here, once, so the builder can trust what it gets: counts are whole numbers
≥ 0 or missing (None), keys are unique and never point outside the source. A bad value is a
one-line :class:`InstacliError` naming the table and the line (row for Parquet) to fix.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from instacli.errors import InstacliError
from instacli.photo_files import not_a_file

#: Engagement counts every dataset has as columns (None where unknown).
COUNT_COLUMNS = ("likes", "comments", "shares")
#: Columns a dataset carries only when its table provides them.
OPTIONAL_COLUMNS = ("followers", "caption", "timestamp")
#: Other names accepted for a canonical column (the original design called shares "distribution").
ALIASES = {"distribution": "shares", "distributions": "shares"}
KNOWN_COLUMNS = ("file_name", "label", *COUNT_COLUMNS, *OPTIONAL_COLUMNS)
#: Largest count: counts and timestamps are stored as int64, so a larger value would crash the build later.
MAX_COUNT = 2**63 - 1
#: Unix seconds of 9999-12-31 23:59:59 UTC, the last moment a date can name.
MAX_TIMESTAMP = 253402300799
#: How many names of table rows that matched no photo a build reports (it counts them all).
LISTED_UNUSED = 100


@dataclass
class Table:
    """A validated table: canonical column names → parsed values, per photo; its other columns
    (``extra_columns``, e.g. an account name to split by) are kept as text under their own names."""

    path: Path
    columns: tuple[str, ...]
    rows: dict[str, dict[str, Any]]
    where: dict[str, str]
    extra_columns: tuple[str, ...] = ()
    #: With ``read_table(keep=...)``: the first names of rows that matched no photo, and how many there were.
    unused: list[str] = field(default_factory=list)
    n_unused: int = 0

    @property
    def name(self) -> str:
        return self.path.name

    def locate(self, file_name: str) -> str:
        """``"<table> line N"`` for messages about a row."""
        return f"{self.name} {self.where[file_name]}"


def normalize_file_name(raw: Any) -> str:
    """Posix path relative to the source; raises ValueError for empty, absolute or escaping paths."""
    text = str(raw).strip().replace("\\", "/") if raw is not None else ""
    if not text:
        raise ValueError("has an empty file_name")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ValueError(f"file_name '{raw}' is an absolute path; use a path relative to SRC")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"file_name '{raw}' points outside SRC; use a path relative to SRC")
    return "/".join(parts)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "null", "none", "na")


def parse_count(value: Any) -> int | None:
    """A whole number ≥ 0 from an int, an integral float or a numeric string; None when missing."""
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        raise ValueError(f"is {value!r}, not a count")
    number: float | int
    if isinstance(value, int):
        number = value
    else:
        try:
            number = int(value) if isinstance(value, str) and value.strip().lstrip("-").isdigit() else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"is '{value}', not a number") from None
        if isinstance(number, float):
            if not math.isfinite(number) or number != int(number):
                raise ValueError(f"is '{value}', not a whole number")
            number = int(number)
    if number < 0:
        raise ValueError(f"is negative ({number}); counts must be ≥ 0")
    if number > MAX_COUNT:
        raise ValueError(f"is '{value}', larger than any count (at most {MAX_COUNT})")
    return int(number)


def parse_timestamp(value: Any) -> int | None:
    """Unix seconds (UTC) from epoch numbers, ISO-8601 strings (naive means UTC) or datetimes,
    within years 1-9999 (beyond that, no date exists and int64 storage would overflow)."""
    if _is_missing(value):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return _seconds(value, value)
    else:
        text = str(value).strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return _seconds(float(text), value)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"is '{value}', not Unix seconds or an ISO-8601 date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def _seconds(number: int | float, value: Any) -> int:
    if not math.isfinite(number) or abs(number) > MAX_TIMESTAMP:
        raise ValueError(f"is '{value}', not a time between the years 1 and 9999 (Unix seconds)")
    return int(number)


def parse_text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def parse_label(value: Any) -> str | None:
    return None if _is_missing(value) else str(value).strip()


PARSERS: dict[str, Callable[[Any], Any]] = {
    "label": parse_label,
    "likes": parse_count,
    "comments": parse_count,
    "shares": parse_count,
    "followers": parse_count,
    "caption": parse_text,
    "timestamp": parse_timestamp,
}


def parse_mapping(specs: list[str] | None) -> dict[str, str]:
    """``["likes=like_count,comments=n"]`` → ``{"likes": "like_count", "comments": "n"}`` (the --map option)."""
    mapping: dict[str, str] = {}
    for spec in specs or []:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            canon, sep, column = item.partition("=")
            canon, column = canon.strip().lower(), column.strip()
            if not sep or not column:
                raise InstacliError(f"--map: '{item}' is not COLUMN=SOURCE_COLUMN; write e.g. --map likes=like_count")
            if canon not in KNOWN_COLUMNS:
                raise InstacliError(f"--map: unknown column '{canon}'; known: {', '.join(KNOWN_COLUMNS)}")
            if mapping.get(canon, column) != column:  # the last one silently won: likes=likes,likes=shares read shares as likes
                raise InstacliError(f"--map: {canon} is mapped twice ({canon}={mapping[canon]}, {canon}={column}); give it once")
            mapping[canon] = column
    return mapping


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refused when a key repeats (``json`` would silently keep the last)."""
    record = dict(pairs)
    if len(record) < len(pairs):
        repeated = next(k for k, _ in pairs if sum(k == other for other, _ in pairs) > 1)
        raise ValueError(f"key '{repeated}' repeats in one object")
    return record


def _read_records(path: Path) -> tuple[list[str], Iterator[tuple[str, dict[str, Any]]]]:
    """The column names as the file lists them (repeats kept, to refuse them) and an iterator over
    (``"line N"`` or ``"row N"``, raw record) of a CSV, JSONL or Parquet file. Records are read as
    they are used, never all at once: a table may list millions of posts besides the few photos."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = list(csv.DictReader(handle).fieldnames or [])
        return header, _csv_records(path)
    if suffix in (".jsonl", ".ndjson"):
        keys: dict[str, None] = {}
        for _, record in _jsonl_records(path):  # a first pass for the columns: any record may add one
            keys.update(dict.fromkeys(record))
        return list(keys), _jsonl_records(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            header = pq.ParquetFile(path).schema_arrow.names
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise InstacliError(f"{path}: not a readable Parquet file ({exc}); re-export it") from None
        return header, _parquet_records(path)
    raise InstacliError(f"{path}: unsupported table format '{path.suffix}'; use .csv, .jsonl or .parquet")


def _csv_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            yield f"line {reader.line_num}", {k: v for k, v in record.items() if k is not None}


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_no_repeated_keys)
            except json.JSONDecodeError as exc:
                raise InstacliError(f"{path} line {number}: not valid JSON ({exc.msg}); fix that line") from None
            except ValueError as exc:
                raise InstacliError(f"{path} line {number}: {exc}; keep one") from None
            if not isinstance(record, dict):
                raise InstacliError(f"{path} line {number}: expected a JSON object per line; fix that line")
            yield f"line {number}", record


def _parquet_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    number = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
            for record in batch.to_pylist():
                number += 1
                yield f"row {number}", record
    except InstacliError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InstacliError(f"{path}: not a readable Parquet file ({exc}); re-export it") from None


def _resolve_columns(keys: list[str], mapping: dict[str, str], path: Path) -> dict[str, str]:
    """Canonical column → column name in the file: --map first (exact name, else any case), then
    exact names (any case), then aliases. Columns that repeat or differ only in case (``likes``,
    ``Likes``) are refused when used: silently taking the last would read the wrong numbers."""
    by_lower: dict[str, list[str]] = {}
    for k in keys:
        by_lower.setdefault(k.strip().lower(), []).append(k)

    def only(candidates: list[str], what: str) -> str:
        if len(candidates) > 1:
            raise InstacliError(f"{path}: columns {', '.join(repr(c) for c in candidates)} repeat or differ only in case, so {what} "
                                f"is ambiguous; rename or drop all but one")
        return candidates[0]

    resolved: dict[str, str] = {}
    for canon, column in mapping.items():
        if column.lower() not in by_lower:
            raise InstacliError(f"--map {canon}={column}: {path.name} has no column '{column}'; its columns: {', '.join(keys)}")
        exact = [k for k in keys if k == column]
        resolved[canon] = only(exact or by_lower[column.lower()], f"--map {canon}={column}")
    for canon in KNOWN_COLUMNS:
        if canon not in resolved and canon in by_lower:
            resolved[canon] = only(by_lower[canon], canon)
    aliases = [a for a in ALIASES if a in by_lower and ALIASES[a] not in resolved]
    if len(aliases) > 1:
        raise InstacliError(f"{path}: columns {' and '.join(aliases)} both mean shares; keep one or pick with --map shares=<column>")
    for alias in aliases:
        resolved[ALIASES[alias]] = only(by_lower[alias], ALIASES[alias])
    if "file_name" not in resolved:
        # A table written with another delimiter (Excel in many locales writes ';') reads as one column.
        other = next((d for d in (";", "\t", "|") if len(keys) == 1 and d in keys[0]), None)
        hint = f" (its one column, {keys[0][:60]!r}, looks {other!r}-separated: save it comma-separated)" if other else ""
        raise InstacliError(f"{path}: no 'file_name' column{hint}; add one (photo path relative to SRC) or pick one with --map file_name=<column>")
    return resolved


def read_table(path: Path, mapping: dict[str, str] | None = None, keep: Collection[str] | None = None) -> Table:
    """Read and validate a table; raises InstacliError naming the file and line of the first bad value.

    ``keep``: the file names of the photos at hand. Only their rows are kept; every other row is
    still checked, then only counted, and the first :data:`LISTED_UNUSED` of their names noted (a
    table of a whole account's history beside a few photos once took 1.1 GB and a 45 MB report).
    """
    path = Path(path)
    if problem := not_a_file(path):
        raise InstacliError(f"{path}: {problem}; check the path")
    try:
        return _parse_table(path, mapping or {}, keep)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InstacliError(f"{path}: cannot be read as UTF-8 {path.suffix.lstrip('.').upper()} ({exc}); re-export it") from None


def _parse_table(path: Path, mapping: dict[str, str], keep: Collection[str] | None) -> Table:
    keys, records = _read_records(path)
    columns = _resolve_columns(keys, mapping, path)
    # unused columns under a canonical name (e.g. 'likes' beside --map likes=like_count) are dropped, not extras
    extras = tuple(k for k in keys if k.strip() and k not in columns.values() and k.strip().lower() not in (*KNOWN_COLUMNS, *ALIASES))
    rows: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    unused: list[str] = []
    n_unused = 0
    wanted = None if keep is None else _kept_records(path, keys, columns, keep)
    if wanted is not None:  # a clean table, checked column-wise: only the rows of the photos at hand are parsed
        records, n_unused, unused = wanted
    for location, record in records:
        file_name, values = _parse_record(path, location, record, columns, extras)
        if file_name in rows:
            raise InstacliError(f"{path} {location}: file_name '{file_name}' repeats {where[file_name]}; keep one row per photo")
        if keep is not None and file_name not in keep:
            n_unused += 1
            if len(unused) < LISTED_UNUSED:
                unused.append(file_name)
            continue
        rows[file_name] = values
        where[file_name] = location
    return Table(path=path, columns=tuple(c for c in KNOWN_COLUMNS if c in columns and c != "file_name"), rows=rows, where=where,
                 extra_columns=extras, unused=unused, n_unused=n_unused)


def _parse_record(path: Path, location: str, record: dict[str, Any], columns: dict[str, str], extras: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """The normalized file name and the parsed values of one record; a bad value is a one-line error."""
    try:
        file_name = normalize_file_name(record.get(columns["file_name"]))
    except ValueError as exc:
        raise InstacliError(f"{path} {location}: {exc}") from None
    values = {}
    for canon, column in columns.items():
        if canon == "file_name":
            continue
        try:
            values[canon] = PARSERS[canon](record.get(column))
        except ValueError as exc:
            raise InstacliError(f"{path} {location}: {column} {exc}; fix the value or leave it empty") from None
    values.update((column, parse_label(record.get(column))) for column in extras)
    return file_name, values


#: Values the column-wise check accepts as they are; anything else takes the row-by-row path, which
#: parses it or names the line to fix. Counts: digits (at most 18: below MAX_COUNT) or a missing marker.
_CLEAN_COUNT = r"^\s*(\d{1,18}|[Nn][Aa][Nn]|[Nn][Uu][Ll][Ll]|[Nn][Oo][Nn][Ee]|[Nn][Aa]|)\s*$"
_CLEAN_TIMESTAMP = r"^\s*(-?\d{1,11}|[Nn][Aa][Nn]|[Nn][Uu][Ll][Ll]|[Nn][Oo][Nn][Ee]|[Nn][Aa]|)\s*$"  # |t| < MAX_TIMESTAMP
#: A file name that ``normalize_file_name`` returns unchanged: no backslash, drive, absolute, empty,
#: ``.`` or ``..`` part, surrounding space, or line break (a CSV line per record keeps line numbers right).
_UNCLEAN_FILE_NAME = r"\\|^/|^[A-Za-z]:|//|/$|(^|/)\.\.?(/|$)|^\s|\s$|^$|[\r\n]"
#: Rows per batch of the column-wise read.
_BATCH_ROWS = 65_536


def _kept_records(path: Path, keys: list[str], columns: dict[str, str], keep: Collection[str]) -> tuple[Iterator[tuple[str, dict[str, Any]]], int, list[str]] | None:
    """For a CSV or Parquet table whose every value passes a column-wise check (the usual export of
    millions of rows): the records of the photos at hand, how many other rows there were and the
    first :data:`LISTED_UNUSED` of their names. Reading and checking a million rows one by one as
    Python dicts took a minute and a half; pyarrow does it a batch at a time. ``None``: the table
    needs the row-by-row path (JSONL, a value to parse or to report, a repeated column name)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if path.suffix.lower() not in (".csv", ".parquet") or len(set(keys)) != len(keys):
        return None
    kept_set = pa.array(list(keep), pa.string())
    label, first = ("line", 2) if path.suffix.lower() == ".csv" else ("row", 1)  # CSV: the header is line 1
    records: list[tuple[str, dict[str, Any]]] = []
    unused: list[str] = []
    n_unused = offset = 0
    batches = _arrow_batches(path, keys)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError, ValueError):  # ragged, blank line, bad UTF-8: the row path says where
            return None
        if batch is None:
            break
        if not all(_clean(batch.column(column), canon) for canon, column in columns.items()):
            return None
        if any(pa.types.is_string(array.type) and pc.any(pc.match_substring_regex(array, r"[\r\n]")).as_py() for array in batch.columns):
            return None  # a record over several lines: line numbers need the row path
        names = batch.column(columns["file_name"])
        mask = pc.fill_null(pc.is_in(names, value_set=kept_set), False)
        for index, record in zip(pc.indices_nonzero(mask).to_pylist(), batch.filter(mask).to_pylist()):
            records.append((f"{label} {offset + index + first}", record))
        others = names.filter(pc.invert(mask))
        n_unused += len(others)
        unused += others.slice(0, LISTED_UNUSED - len(unused)).to_pylist() if len(unused) < LISTED_UNUSED else []
        offset += batch.num_rows
    return iter(records), n_unused, unused


def _arrow_batches(path: Path, keys: list[str]) -> Iterator[Any]:
    """The table's record batches; CSV values as text, as the csv module reads them."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS)
        return
    import pyarrow as pa
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(block_size=1 << 22),
        parse_options=pcsv.ParseOptions(ignore_empty_lines=False, newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types={k: pa.string() for k in keys}, strings_can_be_null=False),
    )
    yield from reader


def _clean(array: Any, canon: str) -> bool:
    """Whether every value of a column passes the column-wise check for ``canon``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if canon not in ("file_name", *COUNT_COLUMNS, "followers", "timestamp") or pa.types.is_null(array.type):
        return True  # label, caption, extras: text, any value is valid
    if pa.types.is_integer(array.type) and canon != "file_name":
        low, high = pc.min_max(array).values()
        bound = MAX_TIMESTAMP if canon == "timestamp" else MAX_COUNT
        return low.as_py() is None or (low.as_py() >= (-bound if canon == "timestamp" else 0) and high.as_py() <= bound)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return False
    if canon == "file_name":
        return array.null_count == 0 and not pc.any(pc.match_substring_regex(array, _UNCLEAN_FILE_NAME)).as_py()
    pattern = _CLEAN_TIMESTAMP if canon == "timestamp" else _CLEAN_COUNT
    return bool(pc.all(pc.fill_null(pc.match_substring_regex(array, pattern), True)).as_py())
