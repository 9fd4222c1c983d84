"""``instacli predict``: score a whole folder of photos into CSV, JSONL or Parquet."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.progress import Progress

from instacli.cli.common import TTA_HELP, console
from instacli.errors import InstacliError


app = typer.Typer()


class Engine(str, Enum):
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
    batch_size: int = typer.Option(64, help="Images per batch."),
    workers: int = typer.Option(2, help="Processes that decode images."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    tta: bool = typer.Option(False, "--tta", help=TTA_HELP),
    engine: Engine = typer.Option(Engine.local, help="Where to score: this machine, or a Ray cluster (pip install 'instacli[ray]')."),
    address: Optional[str] = typer.Option(
        None, help="With --engine ray: the cluster, auto (the one on this machine), HOST:PORT or ray://HOST:PORT; default a local one."),
) -> None:
    """One row per photo: predicted label, class probabilities, likes, and an error column for unreadable files.

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
    if engine is Engine.ray:  # Ray shows its own progress
        from instacli.ray_predict import predict_on_ray

        summary = predict_on_ray(runs, folder, out, metadata, batch_size, overwrite, column_map=mapping,
                                 tta=TTA_DEFAULT if tta else "none", address=address)
    else:
        total = sum(1 for _ in iter_image_files(folder)) if folder.is_dir() else 0
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("scoring", total=total)
            summary = predict_folder(runs, folder, out, metadata, batch_size, workers, overwrite,
                                     on_batch=lambda n: progress.advance(task, n), column_map=mapping, tta=TTA_DEFAULT if tta else "none")
    console.print(
        f"[green]wrote[/] {summary.out}: {summary.scored} scored, {summary.failed} unreadable "
        f"({summary.scored / max(summary.seconds, 1e-9):.0f} images/s)"
    )
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
