"""``instacli predict``: score a whole folder of photos into CSV, JSONL or Parquet."""

from __future__ import annotations

from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import Progress

from instacli.cli.common import TTA_HELP, console, per_second
from instacli.errors import InstacliError
from instacli.settings import DECODE_WORKERS, PREDICT_BATCH_SIZE


app = typer.Typer()


class Backend(str, Enum):
    """:data:`instacli.prediction.BACKENDS`, as choices of ``--backend``."""

    pytorch = "pytorch"
    onnxruntime = "onnxruntime"


class Engine(str, Enum):
    """Where ``predict`` scores: here, or on a Ray cluster (:mod:`instacli.ray_predict`)."""

    local = "local"
    ray = "ray"


@app.command("predict")
def predict_command(
    paths: list[Path] = typer.Argument(..., metavar="RUN PHOTOS",
                                       help="Run folder(s) written by `instacli train` (several: an ensemble), then the folder of photos (searched recursively)."),
    metadata: Optional[Path] = typer.Option(None, help="Engagement table (CSV/JSONL/Parquet keyed by file_name) for the numeric inputs."),
    column_map: Optional[list[str]] = typer.Option(None, "--map", help="Column names of --metadata, e.g. file_name=img,comments=n_comments (repeatable)."),
    out: Path = typer.Option(Path("predictions.csv"), "--out",
                             help="Output file: .csv, .jsonl or .parquet; with --engine ray, no suffix: a folder of Parquet shards."),
    batch_size: int = typer.Option(PREDICT_BATCH_SIZE, help="Images per batch (1–4096)."),
    workers: int = typer.Option(DECODE_WORKERS, help="Processes that decode images."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    tta: bool = typer.Option(False, "--tta", help=TTA_HELP),
    backend: Backend = typer.Option(Backend.pytorch, "--backend",
                                    help="onnxruntime: run the graph `instacli export` wrote (RUN may then be the .onnx file); needs the export extra."),
    carousel: Optional[str] = typer.Option(None, help="An Instaloader download's carousels: first (photo) or all.", show_default="first"),
    engine: Engine = typer.Option(Engine.local, help=escape("Where to score: this machine, or a Ray cluster (pip install 'instacli[ray]').")),
    address: Optional[str] = typer.Option(
        None, help="With --engine ray: the cluster, auto (the one on this machine), HOST:PORT or ray://HOST:PORT; default a local one."),
) -> None:
    """One row per photo: predicted label, class probabilities, likes, and an error column for unreadable files.

    An Instaloader download (without --metadata) is read as `data build` reads it: each post's own numbers and
    caption, its shortcode and owner in the output; videos and profile pictures are skipped.

    With several runs, their probabilities and (log) likes are averaged: an ensemble."""
    from instacli.augment import TTA_DEFAULT
    from instacli.prediction import predict_folder
    from instacli_datasets import iter_image_files
    from instacli_datasets.engagement import parse_mapping

    if len(paths) < 2:
        raise typer.BadParameter("give at least one run folder, then the folder of photos", param_hint="RUN PHOTOS")
    *runs, folder = paths
    mapping = parse_mapping(column_map)
    if mapping and metadata is None:
        raise InstacliError("--map: renames the columns of --metadata; give --metadata too or drop --map")
    if address is not None and engine is not Engine.ray:
        raise InstacliError("--address: names a Ray cluster; add --engine ray or drop --address")
    if engine is Engine.ray and workers != DECODE_WORKERS:  # was silently ignored: Ray decodes in its own tasks
        raise InstacliError("--workers: sets this machine's decode processes; with --engine ray, Ray sizes its own: drop --workers")
    common = dict(column_map=mapping, tta=TTA_DEFAULT if tta else "none", backend=backend.value, carousel=carousel)
    if engine is Engine.ray:  # Ray shows its own progress
        from instacli.ray_predict import predict_on_ray

        summary = predict_on_ray(runs, folder, out, metadata, batch_size, overwrite, address=address, **common)
    else:
        total = sum(1 for _ in iter_image_files(folder)) if folder.is_dir() else 0
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("scoring", total=total)
            summary = predict_folder(runs, folder, out, metadata, batch_size, workers, overwrite,
                                     on_batch=lambda n: progress.advance(task, n), **common)
    console.print(
        f"[green]wrote[/] {summary.out}: {summary.scored} scored, {summary.failed} unreadable "
        f"({per_second(summary.scored / max(summary.seconds, 1e-9))} images/s)"
    )
    if summary.skipped:
        reasons = Counter(s.reason for s in summary.skipped)
        console.print(f"skipped {len(summary.skipped)} file(s) that are not post photos, as `data build` does: "
                      + "; ".join(f"{n} {why}" for why, n in reasons.most_common()), highlight=False, soft_wrap=True)
    if summary.unfamiliar:
        console.print(f"{summary.unfamiliar} photo(s) look unlike the training photos: their labels are less to be trusted (unfamiliar = true)")
    if summary.from_defaults:
        console.print(f"{summary.from_defaults} rows had no engagement numbers: likes use the training medians (likes_from_defaults = true)")
    if summary.imputed:
        console.print(f"{summary.imputed} missing value(s) in the engagement rows were filled with the training medians")
    if summary.without_caption:
        console.print(f"[yellow]warning: {summary.without_caption} photo(s) had no caption, but this run reads captions: "
                      "they were scored with empty text; pass --metadata with a caption column[/]")
    if summary.failed:
        console.print(f"[yellow]{summary.failed} file{'' if summary.failed == 1 else 's'} could not be read; see the error column[/]")
    if summary.scored == 0:
        raise InstacliError(f"{folder}: nothing could be scored")
