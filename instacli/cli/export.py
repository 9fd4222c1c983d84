"""``instacli export``: a trained run as one ONNX graph for onnxruntime."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from instacli.cli.common import console

app = typer.Typer()


class Format(str, Enum):
    onnx = "onnx"


@app.command("export")
def export_command(
    run: Path = typer.Argument(..., help="Run folder written by `instacli train`."),
    format: Format = typer.Option(Format.onnx, "--format", help="What to export to (ONNX, for onnxruntime)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The .onnx file to write (default RUN/model.onnx); its description goes beside it as .json."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export."),
) -> None:
    """The run's network (encoder and heads) as one ONNX graph with a dynamic batch axis, and a JSON
    beside it with everything around it (preprocessing, engagement scaler, likes transform, classes).

    `instacli predict RUN PHOTOS --backend onnxruntime` then predicts with it. Needs the export extra."""
    from instacli.export import export_onnx

    summary = export_onnx(run, out, overwrite)
    console.print(f"[green]wrote[/] {summary.graph} (inputs {', '.join(summary.inputs)}; outputs {', '.join(summary.outputs)}) "
                  f"and {summary.description} in {summary.seconds:.0f} s")
    console.print("checked against PyTorch on random photos: max |difference| of probabilities "
                  f"{summary.differences['probs']:.1e}, of log likes {summary.differences['log_likes']:.1e}")
