"""``instacli data build``: photos + engagement → a portable, split ``datasets.DatasetDict`` on disk.

The order of work is chosen so that a mistake costs little: everything that can be checked
without decoding (layout, tables, options, the output path) is checked first; photos are then
decoded in a process pool; the dataset is written into a hidden folder that is renamed into place
only when complete (Ctrl-C leaves nothing behind).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from instacli import interrupts
from instacli.errors import InstacliError
from instacli.io import atomic_dir, check_writable_target, output_lock, write_json
from instacli_datasets.engagement import COUNT_COLUMNS, OPTIONAL_COLUMNS, Table, read_table
from instacli_datasets.folder import Photo, Skipped, Source, discover
from instacli_datasets.photo_bytes import encode_photos
from instacli_datasets.instaloader import discover_instaloader, is_instaloader_folder
from instacli_datasets.split_assignment import HOLDOUT, SPLITS, group_split, needed_splits, stratified_split, time_split
from instacli_datasets.synthetic import SYNTHETIC_COLUMNS, SYNTHETIC_KINDS, synthesize

INFO_FILE = "instacli_dataset.json"
REPORT_FILE = "build_report.json"
LAYOUTS = ("auto", "folder", "instaloader")
UNLABELED = "(unlabeled)"
#: Engagement columns a likes model may use as inputs (likes itself is the target).
NUMERIC_INPUTS = ("comments", "shares", "followers")
#: ``--split-by`` values that are not a column; anything else names the column to split by.
SPLIT_MODES = ("random", "time")
#: The column ``--group-pattern`` derives from each photo's file name.
SOURCE_COLUMN = "source"
#: Hidden folder of a build's own temporary files (the photo spool, unsplit Arrow files), inside the output's temporary folder.
SCRATCH = ".build"
Progress = Callable[[int, int], None]


class Spool:
    """Photo bytes kept in a file on disk while a build runs: :func:`collect` appends each photo's
    bytes as it is decoded; :func:`write_split` reads them back by number. A build so holds 16 bytes
    per photo (where its bytes are), never every photo (100,000 photos re-encoded at 256 px are
    about 3 GB). Without ``path`` the bytes are held in memory (a plain folder's in-memory dataset)."""

    def __init__(self, path: Path | None = None) -> None:
        self.handle = open(path, "w+b") if path is not None else None
        self.offsets, self.lengths = array("q"), array("q")  # 16 bytes a photo; a tuple a photo took 110
        self.held: list[bytes] = []

    def put(self, data: bytes) -> int:
        """Store ``data``; returns its number in the spool (0, 1, ...)."""
        if self.handle is None:
            self.held.append(data)
            return len(self.held) - 1
        self.offsets.append(self.handle.seek(0, os.SEEK_END))
        self.lengths.append(len(data))
        self.handle.write(data)
        return len(self.offsets) - 1

    def image(self, number: int) -> dict[str, Any]:
        """Stored image ``number``, as the dataset's image column holds it."""
        if self.handle is None:
            return {"bytes": self.held[number], "path": None}
        self.handle.seek(self.offsets[number])
        return {"bytes": self.handle.read(self.lengths[number]), "path": None}

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


@dataclass
class Collected:
    """The decoded rows of a source, sorted by file name, before any split, held as columns (a dict
    per row cost a build about 1 kB a photo): row ``i`` is ``file_names[i]``, ``labels[i]``, image
    ``i`` of ``spool``, ``values[column][i]`` for each engagement column, and the image's sha256 and
    its group (the key of the photos that must share its split)."""

    source: Source
    spool: Spool
    file_names: list[str]
    labels: list[int]
    #: sha256 of each row's image bytes, 32 bytes a row (hex strings took 113).
    digests: bytearray
    groups: list[str]
    values: dict[str, list[Any]]
    columns: list[str]
    engagement: str | None
    params: dict[str, Any]
    skipped: list[Skipped]
    unused_rows: list[str]
    kept_original: int
    #: The per-photo table the rows came from (engagement table, else the source's own), for ``--split-by``.
    table: Table | None = None
    #: Rows of ``--engagement`` that matched no photo; ``unused_rows`` lists the first of them.
    n_unused: int = 0

    def __len__(self) -> int:
        return len(self.file_names)

    def sha256(self, i: int) -> str:
        return self.digests[32 * i : 32 * (i + 1)].hex()

    def rows(self, indices: Iterable[int] | None = None) -> Iterator[dict[str, Any]]:
        """Rows ``indices`` (all by default) as dicts, each made when asked for; ``image`` is the
        row's number in :attr:`spool`."""
        for i in range(len(self)) if indices is None else indices:
            yield {"image": i, "label": self.labels[i], "file_name": self.file_names[i], **{c: self.values[c][i] for c in self.columns}}

    @property
    def numeric_columns(self) -> list[str]:
        """Input columns that exist and are not all missing."""
        return [c for c in NUMERIC_INPUTS if c in self.columns and any(v is not None for v in self.values[c])]


@dataclass
class BuildReport:
    """What a build produced; also written (with the skipped list) to ``build_report.json``."""

    out: Path
    class_names: list[str]
    counts: dict[str, dict[str, int]]
    skipped: list[Skipped]
    unused_rows: list[str]
    kept_original: int
    reencoded: int
    fingerprint: str
    seconds: float
    engagement: str | None = None
    n_unused: int = 0

    @property
    def n_images(self) -> int:
        return sum(sum(per_class.values()) for per_class in self.counts.values())


def open_source(
    src: Path,
    *,
    layout: str = "auto",
    labels: Path | None = None,
    label_from: str | None = None,
    carousel: str = "first",
    column_map: dict[str, str] | None = None,
    min_classes: int = 2,
) -> Source:
    """Read the layout of ``src``: ``folder`` (category sub-folders or a metadata file, where
    ``column_map`` renames the metadata's columns), ``instaloader``, or ``auto`` to tell them apart."""
    if layout not in LAYOUTS:
        raise InstacliError(f"--source: unknown layout '{layout}'; choose {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = "instaloader" if Path(src).is_dir() and is_instaloader_folder(Path(src)) else "folder"
    if layout == "instaloader":
        return discover_instaloader(Path(src), labels=labels, label_from=label_from, carousel=carousel, min_classes=min_classes)
    if labels is not None or label_from is not None:
        raise InstacliError(f"--labels/--label-from: only for instaloader downloads; {src} takes its labels from its folders or metadata file")
    return discover(Path(src), min_classes=min_classes, column_map=column_map)


def _engagement_table(source: Source, engagement: Path | None, column_map: dict[str, str] | None) -> tuple[Table | None, str | None]:
    """The table that gives engagement and its kind: ``--engagement``, else the source's own table."""
    if engagement is None:
        return (source.table, source.engagement) if source.engagement else (None, None)
    if source.engagement == "instaloader":
        raise InstacliError("--engagement: instaloader downloads bring their own engagement; drop the option")
    table = read_table(Path(engagement), column_map, keep={p.file_name for p in source.photos})
    if "likes" not in table.columns:
        raise InstacliError(f"{engagement}: no 'likes' column; add one or name it with --map likes=<column>")
    missing = [p.file_name for p in source.photos if p.file_name not in table.rows]
    if missing:  # a photo without a row would silently train on a missing target
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InstacliError(f"{table.path}: no row for photo '{missing[0]}'{more}; add rows keyed by file_name (path relative to SRC) or remove the photos")
    return table, f"table:{table.name}"


def label_name(label: int, class_names: Sequence[str]) -> str:
    """The category name of a label index; ``(unlabeled)`` for -1 (likes-only data)."""
    return class_names[label] if label >= 0 else UNLABELED


def collect(
    source: Source,
    *,
    engagement: Path | None = None,
    synthetic: str | None = None,
    seed: int = 42,
    max_side: int = 256,
    workers: int = 2,
    progress: Progress | None = None,
    column_map: dict[str, str] | None = None,
    spool: Spool | None = None,
) -> Collected:
    """Validate the engagement of ``source`` and decode every photo into dataset rows, their images
    in ``spool`` (by default one in memory)."""
    if synthetic is not None and synthetic not in SYNTHETIC_KINDS:
        raise InstacliError(f"--synthetic-engagement: unknown generator '{synthetic}'; choose {' or '.join(SYNTHETIC_KINDS)}")
    if synthetic is not None and (engagement is not None or source.engagement == "instaloader"):
        raise InstacliError("--synthetic-engagement: the data already has engagement (--engagement or instaloader); choose one source")
    table, kind = (None, f"synthetic:{synthetic}") if synthetic else _engagement_table(source, engagement, column_map)
    results = encode_photos([p.file_path for p in source.photos], max_side, workers, progress)

    provided = SYNTHETIC_COLUMNS[synthetic] if synthetic else (table.columns if table is not None else ())
    columns = [*COUNT_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in provided)]
    index = {name: i for i, name in enumerate(source.class_names)}
    spool = spool if spool is not None else Spool()
    file_names: list[str] = []
    labels: list[int] = []
    digests, groups, skipped, kept = bytearray(), [], list(source.skipped), 0
    values: dict[str, list[Any]] = {c: [] for c in columns}
    first_copy: dict[bytes, Photo] = {}  # image sha256 → the first photo with it
    for photo, result in zip(source.photos, results):
        if isinstance(result, str):
            skipped.append(Skipped(photo.file_name, result))
            continue
        # the same picture twice: in two categories it contradicts itself (skip the later copy), in
        # one it shares its first copy's group, so that train and test never hold the same photo
        digest = bytes.fromhex(result.sha256)
        original = first_copy.setdefault(digest, photo)
        if original.label != photo.label:
            skipped.append(Skipped(photo.file_name, f"same picture as {original.file_name} (category {original.label}); keep one copy"))
            continue
        spool.put(result.data)
        file_names.append(photo.file_name)
        labels.append(index.get(photo.label, -1))
        digests += digest
        groups.append(original.group or original.file_name)
        row = table.rows[photo.file_name] if table is not None else {}
        for column, column_values in values.items():
            column_values.append(row.get(column))
        kept += result.kept_original
    del first_copy  # before synthesize allocates its columns: a build's peak
    _check_every_class_readable(source, labels, skipped)
    params: dict[str, Any] = {}
    if synthetic:
        generated, params = synthesize(synthetic, labels, source.class_names, seed)
        values.update(generated)
    unused = table.unused if table is not None and table is not source.table else []
    return Collected(source, spool, file_names, labels, digests, groups, values, columns, kind, params, skipped, unused, kept,
                     table or source.table, n_unused=table.n_unused if unused else 0)


def _check_every_class_readable(source: Source, labels: list[int], skipped: list[Skipped]) -> None:
    present = Counter(labels)
    if not labels:
        raise InstacliError(f"{source.root}: none of its {len(source.photos)} photos is readable (e.g. {skipped[-1].file}: {skipped[-1].reason}); fix or replace them")
    for i, name in enumerate(source.class_names):
        if not present[i]:
            reasons = {s.file: s.reason for s in skipped}
            first = next(p.file_name for p in source.photos if p.label == name)
            raise InstacliError(f"category '{name}': none of its photos is readable (e.g. {first}: {reasons[first]}); fix or replace them")


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence ``datasets``' own progress bars (the CLI shows one bar for the whole build)."""
    from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def features_for(class_names: Sequence[str], columns: Sequence[str]):
    """The dataset schema: image bytes, class label, key, engagement columns (int64/str, None allowed)."""
    from datasets import ClassLabel, Features, Image, Value

    types = {"likes": "int64", "comments": "int64", "shares": "int64", "followers": "int64", "timestamp": "int64"}
    return Features({
        "image": Image(),
        "label": ClassLabel(names=list(class_names)),
        "file_name": Value("string"),
        **{c: Value(types.get(c, "string")) for c in columns},  # caption, and a --split-by column such as source
    })


def _arrow_columns(rows: Sequence[dict[str, Any]], features, image: Callable[[Any], dict[str, Any]]) -> dict[str, list[Any]]:
    """``rows`` as columns in Arrow storage form, each row's image given by ``image(row["image"])``."""
    return {name: [image(r[name]) for r in rows] if name == "image" else [r[name] for r in rows] for name in features}


def to_dataset(rows: list[dict[str, Any]], class_names: Sequence[str], columns: Sequence[str]):
    """An in-memory ``datasets.Dataset`` of ``rows``, which are already in Arrow storage form.

    ``Dataset.from_dict`` would run every image through ``Image.encode_example`` first: a no-op on
    ``{"bytes", "path"}`` rows that took ¾ of a second for 3,200 photos, most of a small build.
    """
    from datasets import Dataset, DatasetInfo
    from datasets.table import InMemoryTable

    features = features_for(class_names, columns)
    table = InMemoryTable.from_pydict(_arrow_columns(rows, features, lambda image: image), schema=features.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=features))


#: Rows per Arrow record batch written by :func:`write_split` (about 30 MB of photos at 256 px).
WRITE_BATCH = 1000


def write_split(rows: Iterable[dict[str, Any]], class_names: Sequence[str], columns: Sequence[str], spool: Spool, path: Path):
    """A memory-mapped ``datasets.Dataset`` of ``rows`` (images in ``spool``), written to the Arrow file
    ``path`` a batch at a time: the same table as :func:`to_dataset`, without holding it in memory."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo

    features = features_for(class_names, columns)
    schema = features.arrow_schema
    rows = iter(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        while batch := list(itertools.islice(rows, WRITE_BATCH)):
            interrupts.check()  # a Ctrl-C that a finalizer swallowed stops here
            writer.write_batch(pa.RecordBatch.from_pydict(_arrow_columns(batch, features, spool.image), schema=schema))
    return Dataset.from_file(str(path), info=DatasetInfo(features=features))  # maps the file: reads no photo


def save_splits(splits: dict[str, Iterable[dict[str, Any]]], class_names: Sequence[str], columns: Sequence[str], spool: Spool, folder: Path) -> None:
    """``folder`` as ``DatasetDict.save_to_disk`` lays it out (``datasets.load_from_disk`` reads it),
    each split's Arrow file written straight from its rows (images in ``spool``) by :func:`write_split`.

    ``save_to_disk`` copies existing datasets: it read the Arrow files written first memory-mapped,
    so that a build's memory grew by the whole dataset (250 MB of mapped pages at 100,000 small
    photos, 3 GB at 256 px). Here ``datasets`` saves empty splits (the format's JSON files stay the
    library's) and each split's rows replace its one data file; a split is so always one file, where
    ``save_to_disk`` cuts files at 500 MB.
    """
    from datasets import Dataset, DatasetDict, config

    features = features_for(class_names, columns)
    empty = DatasetDict({s: Dataset.from_dict({name: [] for name in features}, features=features) for s in splits})
    empty.save_to_disk(str(folder), num_shards=dict.fromkeys(splits, 1))
    for split, rows in splits.items():
        (data_file,) = json.loads((folder / split / config.DATASET_STATE_JSON_FILENAME).read_text())["_data_files"]
        write_split(rows, class_names, columns, spool, folder / split / data_file["filename"])


def fingerprint(collected: Collected, splits: Sequence[str] | None = None) -> str:
    """sha256 over class names and, per photo, file name, image-bytes hash, label, split and engagement."""
    digest = hashlib.sha256(json.dumps(collected.source.class_names).encode())
    for i, (file_name, label) in enumerate(zip(collected.file_names, collected.labels)):
        values = [file_name, collected.sha256(i), label, splits[i] if splits else None, *(collected.values[c][i] for c in collected.columns)]
        digest.update(json.dumps(values, default=str).encode())
    return f"sha256:{digest.hexdigest()}"


def _check_options(out: Path, src: Path, overwrite: bool, seed: int, val_fraction: float, test_fraction: float, max_side: int, workers: int) -> None:
    for option, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= value < 1:
            raise InstacliError(f"{option}: {value} is not in [0, 1); give a fraction such as 0.15")
    if val_fraction + test_fraction >= 1:
        raise InstacliError(f"--val-fraction + --test-fraction: {val_fraction + test_fraction:g} leaves no training photos; keep the sum below 1")
    if max_side < 8:
        raise InstacliError(f"--max-side: {max_side} is too small; use at least 8 (256 is the default)")
    if workers < 1:
        raise InstacliError(f"--workers: {workers} must be at least 1")
    if seed < 0:
        raise InstacliError(f"--seed: {seed} must be ≥ 0")
    out_abs, src_abs = out.resolve(), src.resolve()
    if out_abs == src_abs or src_abs in out_abs.parents or out_abs in src_abs.parents:
        raise InstacliError(f"--out {out}: must not be SRC, inside it or above it; choose a separate folder")
    check_writable_target(out, overwrite, "dataset folder", INFO_FILE)


def derive_sources(source: Source, pattern: str) -> dict[str, str]:
    """``--group-pattern``: file_name → the first capture group of ``pattern`` searched in the photo's
    file name (not its folders). A photo that does not match is an error: a silently dropped or
    lumped-together photo would change what the held-out split measures."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InstacliError(f"--group-pattern {pattern!r}: not a regular expression ({exc}); fix it, e.g. '^([a-z]+-[a-z]+)_'") from None
    if regex.groups < 1:
        raise InstacliError(f"--group-pattern {pattern!r}: has no capture group; put the part that names the source in parentheses, e.g. '^([a-z]+-[a-z]+)_'")
    sources = {}
    for photo in source.photos:
        match = regex.search(PurePosixPath(photo.file_name).name)
        if match is None or not match.group(1):
            raise InstacliError(f"--group-pattern {pattern!r}: photo '{photo.file_name}' does not match it (or its first group is empty); fix the pattern or move the photo out of SRC")
        sources[photo.file_name] = match.group(1)
    return sources


def column_values(collected: Collected, column: str, sources: dict[str, str] | None, option: str | None = None) -> list[Any]:
    """The value of ``column`` for each row: the derived ``source``, a dataset column, or another
    column of the table (instaloader's ``owner``, any extra column of an engagement table);
    ``option`` names the option in errors (default ``--split-by COLUMN``)."""
    option = option or f"--split-by {column}"
    names, table = collected.file_names, collected.table
    extras = table.extra_columns if table is not None else ()
    if column == SOURCE_COLUMN and sources is not None:
        values = [sources[name] for name in names]
    elif column in collected.columns:
        values = collected.values[column]
    elif column in extras:
        values = [table.rows[name].get(column) for name in names]  # type: ignore[union-attr]
    else:
        known = ", ".join([*collected.columns, *extras]) or "none"
        raise InstacliError(f"{option}: no such column (this data has: {known}); name one of them, or derive '{SOURCE_COLUMN}' with --group-pattern")
    missing = next((name for name, v in zip(names, values) if v is None or v == ""), None)
    if missing is not None:
        raise InstacliError(f"{option}: photo '{missing}' has no {column}; fill it in or split by another column")
    return values


def assign_splits(
    collected: Collected, *, split_by: str, sources: dict[str, str] | None, holdout: Sequence[str],
    val_fraction: float, test_fraction: float, seed: int,
) -> tuple[list[str], str | None]:
    """The split of each row and the group column (``--split-by`` COLUMN, else the derived ``source``).

    Rows whose group value is in ``holdout`` go to the ``holdout`` split; the others are split by
    ``split_by``: ``random`` (stratified), ``time`` (newest in test) or whole values of a column.
    """
    column = split_by if split_by not in SPLIT_MODES else (SOURCE_COLUMN if sources is not None else None)
    values = [str(v) for v in column_values(collected, column, sources)] if column else None
    held = set(holdout)
    if held and values is None:
        raise InstacliError(f"--holdout: needs a group column to pick rows by; derive '{SOURCE_COLUMN}' with --group-pattern or give --split-by COLUMN")
    if values is not None and held - set(values):
        present = sorted(set(values))
        listed = ", ".join(present[:20]) + (f" (and {len(present) - 20} more)" if len(present) > 20 else "")
        raise InstacliError(f"--holdout {sorted(held - set(values))[0]}: no photo has that {column}; its values: {listed}")
    rest = [i for i in range(len(collected)) if values is None or values[i] not in held]
    if not rest:
        raise InstacliError(f"--holdout: holds out every photo; leave some {column} values for training")
    fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction}
    if split_by == "random":
        labels = [collected.labels[i] for i in rest]
        picked = stratified_split(labels, [collected.groups[i] for i in rest], seed=seed, **fractions)
    elif split_by == "time":
        if "timestamp" not in collected.columns:
            raise InstacliError("--split-by time: the data has no timestamp column; add one to the engagement table (Unix seconds or ISO-8601)")
        times = column_values(collected, "timestamp", None, "--split-by time")
        picked = time_split([times[i] for i in rest], [collected.groups[i] for i in rest], **fractions)
    else:
        picked = group_split([values[i] for i in rest], seed=seed, **fractions)  # type: ignore[index]
    empty = [s for s in needed_splits(val_fraction, test_fraction) if s not in picked]
    if empty and split_by != "random":  # the stratified split never empties train, and keeps its old behaviour otherwise
        units = "" if split_by == "time" else f" with {len({values[i] for i in rest})} values of {column}"  # type: ignore[index]
        raise InstacliError(f"--split-by {split_by}: split '{empty[0]}' would be empty ({len(rest)} photos{units}); add photos or values, or set its fraction to 0")
    assignment = [HOLDOUT] * len(collected)
    for i, split in zip(rest, picked):
        assignment[i] = split
    if column and column not in collected.columns:  # store it, so the groups of each split can be checked and analysed
        collected.columns.append(column)
        collected.values[column] = values  # type: ignore[assignment]
    return assignment, column


def build_dataset(
    src: Path,
    out: Path,
    *,
    engagement: Path | None = None,
    synthetic: str | None = None,
    seed: int = 42,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    max_side: int = 256,
    overwrite: bool = False,
    workers: int = 2,
    progress: Progress | None = None,
    column_map: dict[str, str] | None = None,
    layout: str = "auto",
    labels: Path | None = None,
    label_from: str | None = None,
    carousel: str = "first",
    split_by: str = "random",
    group_pattern: str | None = None,
    holdout: Sequence[str] = (),
) -> BuildReport:
    """Build the dataset of ``src`` into ``out`` (see the module docstring); returns what was done.

    ``column_map`` renames columns of the engagement table (else of the metadata file); ``layout``,
    ``labels``, ``label_from`` and ``carousel`` are described at :func:`open_source` and
    :func:`instacli_datasets.instaloader.discover_instaloader`; ``split_by``, ``group_pattern`` and
    ``holdout`` at :func:`assign_splits` and :func:`derive_sources`.
    """
    from instacli import __version__

    started = time.perf_counter()
    src, out = Path(src), Path(out)
    _check_options(out, src, overwrite, seed, val_fraction, test_fraction, max_side, workers)
    # locked from the start: a second build to the same --out, or an --out that cannot be written, fails before any decoding
    with output_lock(out), atomic_dir(out, overwrite=overwrite, what="dataset folder", marker=INFO_FILE) as tmp, quiet_datasets():
        scratch = tmp / SCRATCH
        scratch.mkdir()
        source = open_source(src, layout=layout, labels=labels, label_from=label_from, carousel=carousel,
                             column_map=None if engagement else column_map)
        sources = derive_sources(source, group_pattern) if group_pattern is not None else None
        with Spool(scratch / "photos") as spool:
            collected = collect(source, engagement=engagement, synthetic=synthetic, seed=seed, max_side=max_side,
                                workers=workers, progress=progress, column_map=column_map, spool=spool)
            names = source.class_names
            assignment, group_column = assign_splits(collected, split_by=split_by, sources=sources, holdout=holdout,
                                                     val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
            split_names = [*SPLITS, HOLDOUT] if holdout else list(SPLITS)
            split_of = np.asarray(assignment)
            save_splits({s: collected.rows(np.flatnonzero(split_of == s)) for s in split_names}, names, collected.columns, spool, tmp)
        shutil.rmtree(scratch)
        counts = {s: {n: 0 for n in names or [UNLABELED]} for s in split_names}
        for label, split in zip(collected.labels, assignment):
            counts[split][label_name(label, names)] += 1
        report = BuildReport(
            out=out, class_names=names, counts=counts, skipped=collected.skipped, unused_rows=collected.unused_rows, n_unused=collected.n_unused,
            kept_original=collected.kept_original, reencoded=len(collected) - collected.kept_original,
            fingerprint=fingerprint(collected, assignment), seconds=0.0, engagement=collected.engagement,
        )
        info = {
            "instacli_version": __version__,
            "source": str(src.resolve()),
            "source_kind": source.kind,
            "engagement": collected.engagement,
            "engagement_params": collected.params,
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "split": {"by": split_by, "group_column": group_column, "group_pattern": group_pattern, "holdout": list(holdout)},
            "max_side": max_side,
            "class_names": names,
            "columns": ["image", "label", "file_name", *collected.columns],
            "numeric_columns": collected.numeric_columns,
            "splits": {s: sum(counts[s].values()) for s in split_names},
            "class_counts": counts,
            "skipped": len(collected.skipped),
            "fingerprint": report.fingerprint,
        }
        write_json(tmp / INFO_FILE, info)
        report.seconds = time.perf_counter() - started
        write_json(tmp / REPORT_FILE, {
            "source": str(src.resolve()),
            "out": str(out.resolve()),
            "images": report.n_images,
            "kept_original": report.kept_original,
            "reencoded": report.reencoded,
            "seconds": round(report.seconds, 3),
            "images_per_second": round(report.n_images / max(report.seconds, 1e-9), 1),
            "skipped": [{"file": s.file, "reason": s.reason} for s in collected.skipped],
            "unused_table_rows": collected.unused_rows,  # the first LISTED_UNUSED
            "unused_table_row_count": collected.n_unused,
        })
        return report
