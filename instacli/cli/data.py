"""``instacli data build`` and ``instacli data info``: thin wrappers over :mod:`instacli_datasets`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


app = typer.Typer(help="Build datasets from photo folders and inspect them.", no_args_is_help=True)
console = Console()


@app.command("build")
def build(
    src: Annotated[Path, typer.Argument(help="Folder with one sub-folder per category, photos + metadata.csv/.jsonl, or an instaloader download.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to create.")],
    engagement: Annotated[Path | None, typer.Option(help="CSV/JSONL/Parquet keyed by file_name with likes, comments, shares (distribution) [, followers, caption, timestamp].")] = None,
    synthetic_engagement: Annotated[str | None, typer.Option(help="Generate engagement instead: 'seed' (uniform ranges per category) or 'realistic' (followers-driven, with an oracle).")] = None,
    column_map: Annotated[list[str] | None, typer.Option("--map", help="Column names of the table, e.g. likes=like_count,comments=n_comments (repeatable).")] = None,
    source: Annotated[str, typer.Option(help="Layout of SRC: auto, folder (category folders or metadata file) or instaloader.")] = "auto",
    labels: Annotated[Path | None, typer.Option(help="Instaloader: table of file_name,label.")] = None,
    label_from: Annotated[str | None, typer.Option(help="Instaloader: 'owner' labels each photo with its account.")] = None,
    carousel: Annotated[str, typer.Option(help="Instaloader: use the 'first' photo of a carousel or 'all'.")] = "first",
    val_fraction: Annotated[float, typer.Option(help="Share of each category for validation.")] = 0.15,
    test_fraction: Annotated[float, typer.Option(help="Share of each category for test.")] = 0.15,
    split_by: Annotated[str, typer.Option(help="How rows are split: 'random' (stratified by category), 'time' (newest posts in test, next newest in validation) or a COLUMN (e.g. source, owner, any engagement-table column): all rows with one value land in one split.")] = "random",
    group_pattern: Annotated[str | None, typer.Option(help=escape("Regex whose first capture group, searched in each file name, gives a 'source' column, e.g. '^([a-z]+-[a-z]+)_'; a photo that does not match is an error."))] = None,
    holdout: Annotated[str | None, typer.Option(help="Comma-separated values of the group column (--split-by COLUMN, else the --group-pattern source) whose rows form an extra split 'holdout'.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and of synthetic engagement.")] = 42,
    max_side: Annotated[int, typer.Option(help="Longer image side after resizing, in pixels.")] = 256,
    workers: Annotated[int, typer.Option(help="Decoding processes.")] = 2,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing dataset folder.")] = False,
) -> None:
    """Decode, resize and split the photos of SRC into a portable dataset folder."""
    from instacli_datasets import build_dataset
    from instacli_datasets.engagement import parse_mapping
    from instacli_datasets.instaloader import VIDEO_REASON

    mapping = parse_mapping(column_map)
    with Progress(TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("decode", total=None)
        report = build_dataset(
            src, out, engagement=engagement, synthetic=synthetic_engagement, seed=seed,
            val_fraction=val_fraction, test_fraction=test_fraction, max_side=max_side,
            overwrite=overwrite, workers=workers, column_map=mapping,
            layout=source, labels=labels, label_from=label_from, carousel=carousel,
            split_by=split_by, group_pattern=group_pattern, holdout=[v.strip() for v in (holdout or "").split(",") if v.strip()],
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    table = Table(title=f"{report.out}  ({report.n_images} photos, {report.seconds:.1f} s)")
    table.add_column("category")
    for split in report.counts:
        table.add_column(split, justify="right")
    for name in report.counts["train"]:
        table.add_row(name, *(str(report.counts[s][name]) for s in report.counts))
    console.print(table)
    untrained = [name for name, n in report.counts["train"].items() if n == 0]
    if untrained:
        console.print(f"[yellow]no training photos for {', '.join(untrained)}[/]: the model cannot learn them; choose other --holdout values or another --split-by/--seed")
    console.print(f"engagement: {report.engagement or 'none'}   kept original bytes: {report.kept_original}   re-encoded: {report.reencoded}")
    if report.skipped:
        videos = sum(s.reason == VIDEO_REASON for s in report.skipped)
        of_which = f" ({videos} video posts)" if videos else ""
        console.print(f"[yellow]skipped {len(report.skipped)} file(s){of_which}[/]; reasons in {report.out / 'build_report.json'}")
    if report.n_unused:
        listed = "listed" if report.n_unused == len(report.unused_rows) else f"the first {len(report.unused_rows)} listed"
        console.print(f"[yellow]{report.n_unused} table row(s) matched no photo[/]; {listed} in {report.out / 'build_report.json'}")


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:,.6g}"


@app.command("info")
def info(data: Annotated[Path, typer.Argument(help="Dataset folder made by 'instacli data build'.")]) -> None:
    """Show the splits, class balance and engagement statistics of a dataset."""
    from instacli_datasets.summary import summarize

    summary = summarize(data)
    meta = summary.info
    console.print(f"[bold]{data}[/]", highlight=False)
    console.print(f"source: {meta.source}\nengagement: {meta.engagement or 'none'}\nfingerprint: {meta.fingerprint}", highlight=False, soft_wrap=True)
    split = meta.split
    if split.get("by", "random") != "random" or split.get("holdout"):
        held = f"; holdout ({split['group_column']}): {', '.join(split['holdout'])}" if split.get("holdout") else ""
        console.print(f"split by: {split['by']}{held}", highlight=False, soft_wrap=True)

    splits = Table(title="photos per split and category")
    splits.add_column("category")
    for split in summary.class_counts:
        splits.add_column(split, justify="right")
    splits.add_column("total", justify="right")
    for name in [*next(iter(summary.class_counts.values())), None]:
        counts = [sum(c.values()) if name is None else c[name] for c in summary.class_counts.values()]
        splits.add_row(name or "[bold]all[/]", *map(str, counts), str(sum(counts)))
    console.print(splits)

    stats = Table(title="engagement (all splits)")
    for column in ("column", "category", "n", "missing", "min", "median", "mean", "max"):
        stats.add_column(column, justify="left" if column in ("column", "category") else "right")
    for row in summary.stats:
        stats.add_row(row.column, row.class_name, str(row.count), str(row.missing),
                      *map(_number, (row.min, row.median, row.mean, row.max)))
    console.print(stats if meta.engagement else "engagement: none (category-only data)")
