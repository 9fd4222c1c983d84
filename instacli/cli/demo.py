"""``instacli demo``: the end-to-end pipeline on the bundled sample photos, in about two minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from instacli.cli.evaluate import print_evaluation
from instacli.cli.common import console
from instacli.cli.progress import RichReporter


app = typer.Typer()


@app.command("demo")
def demo_command(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the demo's dataset, run and predictions.", show_default="a new temp folder"),
    encoder: str = typer.Option("efficientnet-lite0", help="Image encoder; e.g. vit-scratch to learn from scratch (less accurate on 124 photos)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the outputs of an earlier demo in --out."),
) -> None:
    """Bundled sample photos → dataset → training → evaluation → predictions, with results on screen."""
    from instacli.demo import run_demo

    console.rule("[bold]instacli demo")
    result = run_demo(out, encoder=encoder, reporter=RichReporter(console), overwrite=overwrite)
    print_evaluation(result.evaluation)
    console.print(f"predictions for {result.predictions.scored} sample photos: {result.predictions.out}")
    console.rule(f"done in {result.seconds:.0f} s — everything is in {result.workdir}")
