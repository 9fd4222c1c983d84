"""``instacli explain``: where a photo's category came from, and what drives its predicted likes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from instacli.cli.common import console
from instacli.errors import InstacliError

app = typer.Typer()


@app.command("explain")
def explain_command(
    run: Path = typer.Argument(..., help="Run folder written by `instacli train`."),
    photos: Optional[Path] = typer.Argument(None, help="Folder of photos to explain (searched recursively); or give --data."),
    out: Path = typer.Option(..., "--out", help="Folder to write: category/*.png heatmaps, likes_attributions.json/.png, index.html."),
    data: Optional[Path] = typer.Option(None, "--data", help="Explain every photo of a split of this dataset instead of a folder."),
    split: str = typer.Option("test", "--split", help="The split of --data."),
    metadata: Optional[Path] = typer.Option(None, help="Engagement table of the photos' numbers and captions (as for predict)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Grad-CAM heatmaps of where each photo's category came from, and integrated gradients of what
    drives its predicted likes (the photo, each engagement number, the caption), per photo and on
    average. Needs the explain extra."""
    from instacli.explain import INDEX, explain, folder_photos, split_photos
    from instacli.io import check_writable_target
    from instacli.model import load_run

    if (photos is None) == (data is None):
        raise InstacliError("give either a folder of PHOTOS or --data DATA (with --split), not both or neither")
    if data is not None and metadata is not None:
        raise InstacliError("--metadata: a dataset brings its own engagement numbers; drop --metadata with --data")
    check_writable_target(out, overwrite, "explanation folder", INDEX)
    loaded = load_run(run)
    if photos is not None:
        chosen, title = folder_photos(loaded, photos, metadata), f"{photos}"
    else:
        chosen, title = split_photos(loaded, data, split), f"{data}, {split} split"
    summary = explain(loaded, chosen, out, title, overwrite)
    console.print(f"[green]wrote[/] {summary.out}/index.html: {summary.photos} photo(s) explained"
                  + (f", {summary.skipped} unreadable" if summary.skipped else ""))
    if summary.mean_abs:
        ranked = sorted(summary.mean_abs.items(), key=lambda kv: -kv[1])
        console.print("what drives the predicted likes (mean |attribution|, log1p likes): "
                      + ", ".join(f"{group} {value:.3f}" for group, value in ranked))
