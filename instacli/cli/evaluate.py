"""``instacli evaluate``: metrics of a trained run on a dataset split or a class-folder tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from instacli.cli.common import TTA_HELP, console
from instacli.settings import DECODE_WORKERS, EVALUATE_BATCH_SIZE


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def print_evaluation(result: dict[str, Any]) -> None:
    """Summary, per-class table and confusion matrix as rich tables."""
    from instacli.run_folder import subset

    summary = Table(title=f"Evaluation on {result['data']} ({subset(result['split'])}, n={result['n']})", show_header=False)
    for key in ("accuracy", "f1_macro", "ece_uncalibrated", "ece", "temperature", "unfamiliar_share", "likes_mae", "oracle_likes_mae", "likes_mae_class_median", "likes_rmse", "likes_r2",
                "likes_spearman", "log_likes_mae", "oracle_log_likes_mae", "imputed_values"):
        if key.startswith("oracle_") and result.get(key) is None:
            continue  # only data from --synthetic-engagement realistic has an oracle
        summary.add_row(key, _fmt(result.get(key)))
    if isinstance(result["run"], list):
        summary.add_row("ensemble of", ", ".join(result["run"]))
    if result.get("tta", "none") != "none":
        summary.add_row("test-time augmentation", result["tta"])
    console.print(summary)
    if result.get("per_class"):
        per_class = Table(title="Per class")
        for col in ("class", "precision", "recall", "F1", "support"):
            per_class.add_column(col, justify="right")
        for name, m in result["per_class"].items():
            per_class.add_row(name, _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), str(m["support"]))
        console.print(per_class)
        names = list(result["per_class"])
        cm = Table(title="Confusion matrix (rows: true, columns: predicted)")
        cm.add_column("")
        for name in names:
            cm.add_column(name, justify="right")
        for name, row in zip(names, result["confusion_matrix"]):
            cm.add_row(name, *map(str, row))
        console.print(cm)
    if result["skipped"]:
        first = result["skipped"][0]
        example = escape(f"{first['file']}: {first['reason']}")  # a file name is not rich markup
        console.print(f"[yellow]skipped {len(result['skipped'])} file(s)[/] (e.g. {example}); all listed in metrics.json")
    if result.get("accuracy_by_group"):
        groups = Table(title=f"Accuracy per {result['group_column']}")
        for col in (result["group_column"], "n", "accuracy"):
            groups.add_column(col, justify="right")
        for name, m in result["accuracy_by_group"].items():
            groups.add_row(name, str(m["n"]), _fmt(m["accuracy"]))
        console.print(groups)
    if result["outputs"] is not None:
        console.print(f"plots and metrics.json in {result['outputs']}")


app = typer.Typer()


@app.command("evaluate")
def evaluate_command(
    runs: list[Path] = typer.Argument(..., metavar="RUN", help="Run folder(s) written by `instacli train` (several: an ensemble; needs --out)."),
    data: Path = typer.Option(..., "--data", help="Dataset folder, or a folder with one sub-folder of photos per category."),
    split: str = typer.Option("test", help="Split of a saved dataset (ignored for a plain folder)."),
    batch_size: int = typer.Option(EVALUATE_BATCH_SIZE, help="Images per batch (1–4096)."),
    workers: int = typer.Option(DECODE_WORKERS, help="Processes that decode images."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    tta: bool = typer.Option(False, "--tta", help=TTA_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for metrics.json and plots (default: RUN/eval/<data>-<split>[-tta-flip]/)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Accuracy, per-class F1, confusion matrix and likes errors of RUN on DATA; of several runs' averaged answer (an ensemble)."""
    from instacli.augment import TTA_DEFAULT
    from instacli.evaluation import EvaluationNotSaved, evaluate

    try:
        result = evaluate(
            runs, data, split=split, batch_size=batch_size, workers=workers, tta=TTA_DEFAULT if tta else "none", out=out, overwrite=overwrite
        )
    except EvaluationNotSaved as exc:  # shown, then the error says why they were not saved
        show(exc.result, as_json)
        raise
    show(result, as_json)


def show(result: dict[str, Any], as_json: bool) -> None:
    """The metrics as one JSON object (``--json``) or as tables."""
    if as_json:
        typer.echo(json.dumps(result))
    else:
        print_evaluation(result)
