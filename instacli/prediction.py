"""``instacli predict``: score every photo under a folder, streaming, to CSV, JSONL or Parquet.

Files are decoded in DataLoader workers and scored in batches, so memory stays flat however large
the folder. A file that cannot be read gets a row with ``error`` filled and the rest goes on. The
output appears atomically when everything is written.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import NonNegativeInt

from instacli import interrupts
from instacli.ensemble import check_compatible, combine, score_views
from instacli.errors import InstacliError
from instacli.features import as_float
from instacli.decode_cache import FileDataset
from instacli.io import atomic_file, check_writable_target, output_lock
from instacli.launch import precision_autocast, resolve_mixed_precision
from instacli.model import LoadedRun, load_run
from instacli.photo_files import relative_name
from instacli.run_folder import CONFIG, is_run
from instacli.settings import DECODE_WORKERS, PREDICT_BATCH_SIZE, ScoringBatch, check_flag, usable_cores

if TYPE_CHECKING:
    from instacli_datasets.folder import Skipped

FORMATS = (".csv", ".jsonl", ".parquet")
#: What runs the network: PyTorch on the run folder, or onnxruntime on the graph ``instacli export`` wrote.
BACKENDS = ("pytorch", "onnxruntime")
#: Decimals of the class probabilities written (more is noise to a reader, and bloats a CSV).
PROB_DIGITS = 6

#: What a row scored from an Instaloader download also says of its post.
POST_COLUMNS = ("shortcode", "owner")

#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class PredictSummary:
    out: Path
    scored: int
    failed: int
    from_defaults: int
    seconds: float
    #: Missing numeric inputs (cells) of the scored photos that had an engagement row, filled with the
    #: training median (photos without a row are counted in ``from_defaults`` alone).
    imputed: int = 0
    #: Scored photos without a caption although the run reads captions (they get empty text).
    without_caption: int = 0
    #: Scored photos flagged ``unfamiliar``: unlike the training photos, their label is less to be trusted.
    unfamiliar: int = 0
    #: Files of an Instaloader download that are not post photos (videos, profile pictures, …), left out as ``data build`` does.
    skipped: list[Skipped] = field(default_factory=list)


def _check_bare_names(names: Sequence[str], table: dict[str, dict[str, Any]], path: Path) -> None:
    """Refuse a row that would apply to two photos: a row keyed by a bare file name serves a photo
    in any sub-folder, so ``p.jpg`` would give its numbers to both ``d1/p.jpg`` and ``d2/p.jpg``."""
    users: dict[str, list[str]] = {}
    for name in names:
        row = name if name in table else Path(name).name if Path(name).name in table else None
        if row is not None:
            users.setdefault(row, []).append(name)
    for row, files in users.items():
        if len(files) > 1:
            raise InstacliError(f"{path}: row '{row}' would apply to both {files[0]} and {files[1]}; key the rows by the path relative to the folder")


def _metadata_rows(names: Sequence[str], table: dict[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The table row of each file (by relative path, else by bare file name); ``{}`` when it has none."""
    if table is None:
        return [{} for _ in names]
    return [table.get(name) or table.get(Path(name).name) or {} for name in names]


def _feature_matrix(run: LoadedRun, rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Scaled numeric inputs per row and a flag telling whether training medians stood in."""
    features = run.scaler.features
    from_defaults = np.array([bool(features) and not row for row in rows])
    columns = {f: as_float([row.get(f) for row in rows]) for f in features}
    scaled, _ = run.scaler.transform(columns, len(rows))
    return scaled, from_defaults


def _missing_cells(features: Sequence[str], rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Per row, how many of ``features`` are missing (and so get the training median)."""
    missing = np.zeros(len(rows), dtype=np.int64)
    for f in features:
        missing += np.isnan(as_float([row.get(f) for row in rows]))
    return missing


def _read_metadata(path: Path, features: Sequence[str], names: Sequence[str], column_map: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Engagement rows of the photos ``names`` (by relative path or bare file name; columns renamed
    by ``column_map``, as ``--map`` of ``data build``), checked to carry every numeric feature the model uses."""
    from instacli_datasets.engagement import read_table

    table = read_table(path, column_map, keep={*names, *(Path(name).name for name in names)})
    missing = [f for f in features if f not in table.columns]
    if missing:
        raise InstacliError(f"{path}: lacks column(s) {', '.join(missing)} that this model uses; add them or predict without --metadata")
    return table.rows


def _inert(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a file named ``=HYPERLINK(…).jpg`` would otherwise run as a formula."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def output_columns(class_names: Sequence[str], post_columns: Sequence[str] = ()) -> list[str]:
    """The columns of a prediction file; a likes-only run (no classes) has no category columns;
    ``post_columns`` (:data:`POST_COLUMNS`) follow the file of an Instaloader download's photo."""
    category = [*[f"prob_{c}" for c in class_names], "confidence", "unfamiliar"] if class_names else []
    return ["file", *post_columns, "label", *category, "likes", "likes_from_defaults", "error"]


def parquet_schema(class_names: Sequence[str], post_columns: Sequence[str] = ()) -> Any:
    """The Arrow schema of a prediction file's rows (:func:`output_columns`), for every Parquet writer."""
    import pyarrow as pa

    types = {"file": pa.string(), "label": pa.string(), "error": pa.string(), "likes": pa.int64(), "likes_from_defaults": pa.bool_(),
             "unfamiliar": pa.bool_(), **dict.fromkeys(POST_COLUMNS, pa.string())}
    return pa.schema([(c, types.get(c, pa.float64())) for c in output_columns(class_names, post_columns)])


def _writer(out: Path, handle: Any, class_names: Sequence[str], post_columns: Sequence[str] = ()) -> Callable[[list[dict[str, Any]]], None]:
    """A function that appends rows to the open temp file in the format of ``out``'s suffix."""
    columns = output_columns(class_names, post_columns)
    if out.suffix == ".csv":
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        return lambda rows: writer.writerows({k: _inert(v) for k, v in row.items()} for row in rows)
    if out.suffix == ".jsonl":
        return lambda rows: handle.writelines(json.dumps(r) + "\n" for r in rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(class_names, post_columns)
    parquet = pq.ParquetWriter(handle, schema)
    return lambda rows: parquet.write_table(pa.Table.from_pylist(rows, schema=schema)) if rows else parquet.close()


def decode_workers(requested: int) -> int:
    """``requested`` decode processes, leaving at least one core to the model.

    Decoding a photo (≈ 0.4 ms with draft mode) costs a tenth of its forward pass, and the forward's
    OpenMP threads already use every core: on 2 cores a second decoder only steals CPU from them
    (2,000 posts-dev photos: 327 images/s with 1 worker, 312 with 2; 326 decoding inline).
    """
    return max(0, min(requested, usable_cores() - 1))


def decoded_batches(files: Sequence[Path], size: int, batch_size: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """``(uint8 images, row indices, error strings)`` per batch, decoded by DataLoader workers (they start now)."""
    workers = decode_workers(workers)
    loader = torch.utils.data.DataLoader(
        FileDataset(files, size), batch_size=batch_size, num_workers=workers, prefetch_factor=4 if workers else None,
    )
    return iter(loader)


def open_run(path: Path | str, backend: str = "pytorch") -> LoadedRun:
    """The run at ``path`` ready to predict on ``backend`` (:data:`BACKENDS`); for onnxruntime, ``path``
    is a run folder that was exported or the exported ``.onnx`` file (:func:`instacli.export.load_exported`)."""
    if backend not in BACKENDS:
        raise InstacliError(f"--backend {backend}: unknown; choose one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        from instacli.export import load_exported

        return load_exported(path)
    return load_run(path)


def _resize_size(run_path: Path) -> int | None:
    """The decode size a run wants, from its ``config.json`` alone (before the weights load); None if unknown."""
    from instacli.encoders import Preprocess

    try:
        return Preprocess(**json.loads((Path(run_path) / CONFIG).read_text())["preprocess"]).resize_size
    except Exception:  # no or old config: load_run reports it
        return None


@dataclass
class _Scorer:
    """One run of a prediction, with what it needs besides the model (its caption encoder, its precision)."""

    run: LoadedRun
    text_encoder: Any
    precision: str  # accelerate's name: no, bf16 or fp16

    @classmethod
    def prepare(cls, run: LoadedRun, device: torch.device) -> _Scorer:
        text_encoder = None
        if run.config.text_encoder:
            from instacli import registry

            text_encoder = registry.text_encoders.create(run.config.text_encoder, **run.config.text_options)
        run.model.eval().to(device)
        return cls(run, text_encoder, resolve_mixed_precision("auto", run.config.encoder))


class Predictor:
    """The runs of a prediction (one, or an ensemble) ready to score batches of decoded photos.

    ``instacli predict`` and ``instacli serve`` both answer through :meth:`rows`, so a photo gets the
    same row from either, whatever batch it was scored in."""

    def __init__(self, runs: Sequence[LoadedRun], tta: str = "none") -> None:
        self.runs = list(runs)
        self.tta = tta
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.scorers = [_Scorer.prepare(run, self.device) for run in self.runs]
        self.classes: list[str] = self.runs[0].config.class_names

    @property
    def sizes(self) -> list[int]:
        """The decode sizes the runs read photos at (one per distinct size, in run order)."""
        return list(dict.fromkeys(run.preprocess.resize_size for run in self.runs))

    def rows(self, images: dict[int, torch.Tensor], names: Sequence[str], meta: Sequence[dict[str, Any]], errors: Sequence[str],
             post_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
        """One output row (:func:`output_columns`) per photo of a batch: ``images`` are its uint8
        squares at each of :attr:`sizes`, ``meta`` its engagement rows (``{}`` when it has none),
        ``errors`` why a photo could not be decoded ("" when it could; its row then has only the error)
        and ``post_columns`` the columns of ``meta`` that the rows repeat (an Instaloader post's shortcode, owner)."""
        members = []
        from_defaults = np.zeros(len(names), dtype=bool)
        for scorer in self.scorers:
            features, defaults = _feature_matrix(scorer.run, meta)
            from_defaults |= defaults
            with torch.inference_mode(), precision_autocast(self.device, scorer.precision):
                text = None
                if scorer.text_encoder is not None:
                    text = torch.from_numpy(scorer.text_encoder.encode([row.get("caption") or "" for row in meta])).to(self.device)
                pixels = images[scorer.run.preprocess.resize_size].to(self.device, non_blocking=True)
                members += score_views(scorer.run, pixels, torch.from_numpy(features).to(self.device), text, self.tta)
        answer = combine(members, self.runs)
        probs = answer["probs"] if answer["probs"].shape[1] else None  # a likes-only run has class names but no category head
        likes = answer["likes"] if self.runs[0].config.task != "category" else None
        rows = []
        for k, name in enumerate(names):
            ok = not errors[k]
            row: dict[str, Any] = {"file": name, **{column: meta[k].get(column) for column in post_columns}, "label": self.classes[int(probs[k].argmax())] if ok and probs is not None else None}
            for c, label in enumerate(self.classes):
                row[f"prob_{label}"] = round(float(probs[k, c]), PROB_DIGITS) if ok and probs is not None else None
            if self.classes:
                row["confidence"] = round(float(probs[k].max()), PROB_DIGITS) if ok and probs is not None else None  # calibrated
                row["unfamiliar"] = bool(answer["unfamiliar"][k]) if ok and answer["unfamiliar"] is not None else None
            row["likes"] = round(float(likes[k])) if ok and likes is not None else None  # a count
            row["likes_from_defaults"] = bool(from_defaults[k]) if ok and likes is not None else None
            row["error"] = errors[k]
            rows.append(row)
        return rows


def iter_predictions(
    runs: Sequence[LoadedRun], files: Sequence[Path], inputs: PhotoInputs, batch_size: int, workers: int,
    batches: dict[int, Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]] | None = None, tta: str = "none",
) -> Iterator[list[dict[str, Any]]]:
    """Yield one list of output rows per batch: the answer of ``runs`` (one, or an ensemble) averaged
    over the ``tta`` views (:mod:`instacli.ensemble`), for ``files`` and their ``inputs``. ``batches``: already started
    :func:`decoded_batches` of ``files`` by decode size; each size a run needs and lacks there is started here."""
    names, meta = inputs.names, inputs.meta
    predictor = Predictor(runs, tta)
    started = batches or {}
    loaders = {size: started[size] if size in started else decoded_batches(files, size, batch_size, workers) for size in predictor.sizes}
    for decoded in zip(*loaders.values()):
        interrupts.check()  # a Ctrl-C that a finalizer swallowed (e.g. a decode worker's) stops here
        by_size = {size: images for size, (images, _, _) in zip(loaders, decoded)}
        index = decoded[0][1].tolist()
        errors = [next((e for e in row if e), "") for row in zip(*(batch_errors for _, _, batch_errors in decoded))]
        yield predictor.rows(by_size, [names[i] for i in index], [meta[i] for i in index], errors, inputs.post_columns)


def check_paths(folder: Path, out: Path, shards: bool = False, metadata: Path | str | None = None) -> None:
    """Refuse a ``predict`` whose photos or output cannot be right, before any work. ``shards``: the
    engine may write a folder of Parquet shards (an ``--out`` without a suffix)."""
    if metadata is not None and os.path.realpath(out) == os.path.realpath(metadata):  # --overwrite would replace the input
        raise InstacliError(f"--out {out}: is the --metadata table; give the predictions another file name")
    if out.suffix not in FORMATS and not (shards and not out.suffix):
        folder_note = " (or no suffix: a folder of Parquet shards)" if shards else ""
        raise InstacliError(f"{out}: unknown output format; use a name ending in {', '.join(FORMATS)}{folder_note}")
    if not folder.is_dir():
        raise InstacliError(f"{folder}: not a folder; pass the folder of photos to score")
    if shards and not out.suffix and out.is_dir() and any(not entry.name.endswith(".parquet") for entry in out.iterdir()):
        raise InstacliError(f"--out {out}: holds more than Parquet shards of an earlier predict; refusing to replace it, choose another path")
    if out.suffix and out.is_dir():  # --overwrite replaces a file, never a folder
        raise InstacliError(f"--out {out}: is a folder; give a file name, e.g. {out / ('predictions' + out.suffix)}")
    if is_run(folder):  # its plots are images too: `predict RUN1 RUN2` forgot the photos
        raise InstacliError(f"{folder}: is a trained run, not photos; give the folder of photos last (predict RUN... PHOTOS)")


@dataclass
class PhotoList:
    """The photos a prediction scores, and what it does not."""

    files: list[Path]
    #: Sub-folders that could not be walked (unreadable, a symlink loop): each gets an error row.
    unwalked: list[Skipped]
    #: Files of an Instaloader download that are not post photos (videos, profile pictures, …), left out as ``data build`` does.
    skipped: list[Skipped]
    #: An Instaloader download's post rows (numbers, caption, shortcode, owner) by photo name; None for a plain folder.
    posts: dict[str, dict[str, Any]] | None = None


def list_photos(folder: Path, metadata: Path | str | None = None, carousel: str | None = None) -> PhotoList:
    """The image files under ``folder``, sorted. Without ``metadata``, an Instaloader download is read
    as ``data build`` reads it (:func:`instacli_datasets.instaloader.discover_instaloader`), ``carousel``
    (``first``, the default, or ``all``) picking the photos of a carousel."""
    from instacli_datasets.folder import is_image_file, scan
    from instacli_datasets.instaloader import discover_instaloader, is_instaloader_folder

    if metadata is None and is_instaloader_folder(folder):
        source = discover_instaloader(folder, carousel=carousel or "first")
        photos = PhotoList([photo.path for photo in source.photos], [], source.skipped, source.table.rows)
    elif carousel is not None:
        raise InstacliError(f"--carousel: only for an Instaloader download read without --metadata; {folder} is not one (or drop --metadata)")
    else:
        found, unwalked = scan(folder)
        photos = PhotoList([f for f in found if is_image_file(f)], unwalked, [])
    if not photos.files:
        raise InstacliError(f"{folder}: no image files found (jpg, png, webp, …); check the path")
    return photos


@dataclass
class PhotoInputs:
    """What each photo brings besides its pixels: its name in the output, its engagement row, and
    what the summary reports about it (missing numbers, missing caption)."""

    names: list[str]
    meta: list[dict[str, Any]]
    missing: dict[str, int]
    uncaptioned: set[str]
    #: Columns of the post each row also carries (:data:`POST_COLUMNS` for an Instaloader download, read from ``meta``).
    post_columns: tuple[str, ...] = ()

    @classmethod
    def read(cls, runs: Sequence[LoadedRun], folder: Path, photos: PhotoList, metadata: Path | None,
             column_map: dict[str, str] | None) -> PhotoInputs:
        """The inputs from ``metadata`` (a table), else from an Instaloader download's own posts."""
        features = list(dict.fromkeys(f for run in runs for f in run.scaler.features))  # every numeric input a run reads
        names = [relative_name(folder, f) for f in photos.files]
        table = photos.posts
        if metadata is not None:
            table = _read_metadata(metadata, features, names, column_map)
            _check_bare_names(names, table, metadata)
        meta = _metadata_rows(names, table)
        missing = dict(zip(names, _missing_cells(features, meta).tolist()))
        uncaptioned = {name for name, row in zip(names, meta) if any(run.config.text_encoder for run in runs) and not row.get("caption")}
        return cls(names, meta, missing, uncaptioned, POST_COLUMNS if photos.posts is not None else ())


def unwalked_rows(unwalked: Sequence[Any], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The error row of each sub-folder that could not be walked."""
    return [{**dict.fromkeys(output_columns(class_names)), "file": s.file, "error": s.reason} for s in unwalked]


@dataclass
class Tally:
    """The counts of a prediction's summary, added up batch by batch from the rows written."""

    inputs: PhotoInputs
    scored: int = 0
    failed: int = 0
    from_defaults: int = 0
    imputed: int = 0
    without_caption: int = 0
    unfamiliar: int = 0
    #: The first unreadable file and why, for the error when none could be read (a folder of HEIC photos hid the plugin's name).
    first_error: str = ""

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        bad = sum(bool(r["error"]) for r in rows)
        self.first_error = self.first_error or next((f"{r['file']}: {r['error']}" for r in rows if r["error"]), "")
        self.failed += bad
        self.scored += len(rows) - bad
        self.from_defaults += sum(bool(r["likes_from_defaults"]) for r in rows)
        self.imputed += sum(self.inputs.missing.get(r["file"], 0) for r in rows
                            if not r["error"] and r["likes"] is not None and not r["likes_from_defaults"])
        self.without_caption += sum(r["file"] in self.inputs.uncaptioned for r in rows if not r["error"])
        self.unfamiliar += sum(r.get("unfamiliar") is True for r in rows)

    def summary(self, out: Path, folder: Path, started: float, skipped: Sequence[Skipped] = ()) -> PredictSummary:
        """The summary; refuses (and so leaves nothing written) when not one photo could be scored."""
        import time

        if self.scored == 0:
            raise InstacliError(f"{folder}: none of the {len(self.inputs.names)} files could be read as an image "
                                f"(e.g. {self.first_error}); nothing was written")
        return PredictSummary(out=out, scored=self.scored, failed=self.failed, from_defaults=self.from_defaults,
                              seconds=time.perf_counter() - started, imputed=self.imputed, without_caption=self.without_caption,
                              unfamiliar=self.unfamiliar, skipped=list(skipped))


def predict_folder(
    run_path: Path | str | Sequence[Path | str],
    folder: Path | str,
    out: Path | str,
    metadata: Path | str | None = None,
    batch_size: int = PREDICT_BATCH_SIZE,
    workers: int = DECODE_WORKERS,
    overwrite: bool = False,
    on_batch: Callable[[int], None] | None = None,
    column_map: dict[str, str] | None = None,
    tta: str = "none",
    backend: str = "pytorch",
    carousel: str | None = None,
) -> PredictSummary:
    """Score every image under ``folder`` (recursively) with the run at ``run_path`` and write ``out``;
    ``metadata`` gives the numeric inputs (and captions), its columns renamed by ``column_map``.

    Without ``metadata``, an Instaloader download is read as ``data build`` reads it
    (:func:`instacli_datasets.instaloader.discover_instaloader`): each post photo gets its post's
    numbers and caption, and its shortcode and owner in the output (:data:`POST_COLUMNS`); files that
    are not post photos (videos, profile pictures) are skipped and listed in the summary; ``carousel``
    (``first``, the default, or ``all``) picks the photos of a carousel.

    ``run_path`` may list several runs: their answers are averaged (an ensemble), as are those of the
    ``tta`` views of each photo (:data:`instacli.augment.TTA_CHOICES`; :mod:`instacli.ensemble`).
    ``backend`` runs the network(s) in PyTorch or in onnxruntime (:func:`open_run`)."""
    import time

    started = time.perf_counter()
    folder, out = Path(folder), Path(out)
    batch_size, workers = check_flag("--batch-size", batch_size, ScoringBatch), check_flag("--workers", workers, NonNegativeInt)
    check_paths(folder, out, metadata=metadata)
    with output_lock(out):  # another predict to the same --out fails here, before any work
        check_writable_target(out, overwrite, "prediction file")
        photos = list_photos(folder, metadata, carousel)
        run_paths = [run_path] if isinstance(run_path, (str, Path)) else list(run_path)
        sizes = {size for size in map(_resize_size, run_paths) if size is not None}
        batches = {size: decoded_batches(photos.files, size, batch_size, workers) for size in sizes}  # decoding starts while the models load
        runs = [open_run(path, backend) for path in run_paths]
        check_compatible(runs)
        inputs = PhotoInputs.read(runs, folder, photos, Path(metadata) if metadata else None, column_map)
        tally = Tally(inputs)
        with atomic_file(out, "wb" if out.suffix == ".parquet" else "w", overwrite) as handle:
            classes = runs[0].config.class_names
            write = _writer(out, handle, classes, inputs.post_columns)
            for rows in iter_predictions(runs, photos.files, inputs, batch_size, workers, batches, tta):
                write(rows)
                tally.add(rows)
                if on_batch:
                    on_batch(len(rows))
            if photos.unwalked:  # (an empty list would close the Parquet file)
                rows = unwalked_rows(photos.unwalked, classes)
                write(rows)
                tally.add(rows)
            if out.suffix == ".parquet":
                write([])  # closes the Parquet footer
            return tally.summary(out, folder, started, photos.skipped)
