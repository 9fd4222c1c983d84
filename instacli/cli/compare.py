"""``instacli compare`` and ``instacli report``: thin wrappers over :mod:`instacli.compare` and
:mod:`instacli.report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from instacli.cli.common import console
from instacli.cli.progress import RunBar
from instacli.compare import DEFAULT_ENCODERS, DEFAULT_REGRESSORS, SEED_PRESET_KEY, CompareReporter, Plan, compare, parse_overrides
from instacli.errors import InstacliError
from instacli.progress import Reporter
from instacli.cli.settings_flags import setting_option
from instacli.settings import TrainSettings


def _names(text: str | None, flag: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))  # each once, in order
    if text is not None and not names:
        raise InstacliError(f"{flag} {text!r}: give comma-separated names, e.g. {flag} vit-scratch,efficientnet-lite0")
    return names


class RichCompareReporter(CompareReporter):
    """One line per run (what is done with it, then how it went) and a live bar while it trains."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console, self.enabled = console, enabled
        self.bar: RunBar | None = None

    def plan(self, plans: Any) -> None:
        if self.enabled:
            self.console.print(f"[bold]compare[/]: {len(plans)} run(s)")

    def stage(self, message: str) -> None:
        if self.enabled:
            self.console.print(f"[dim]{message}…[/]")

    def run_start(self, plan: Plan, index: int, total: int, action: str) -> Reporter:
        if self.enabled:
            self.console.print(f"[bold][{index}/{total}][/] {action} {plan.name}", highlight=False)
        self.bar = RunBar(self.console, self.enabled, transient=True, indent="    ")
        return self.bar

    def run_end(self, plan: Plan, row: dict[str, Any]) -> None:
        if self.bar:
            self.bar.stop()
        if not self.enabled:
            return
        if row["status"] != "ok":
            self.console.print(f"    [red]{row['status']}[/]: {row['error']}", highlight=False, soft_wrap=True)
            return
        m = row["metrics"]
        acc = m.get("accuracy")
        mae = m.get("log_likes_mae")
        self.console.print(
            f"    [green]ok[/]  accuracy {acc:.3f}" if acc is not None else "    [green]ok[/]",
            f" log-likes MAE {mae:.3f}" if mae is not None else "",
            f" ({row['train_seconds']:.0f} s)" if row.get("train_seconds") else "",
            sep="", highlight=False,
        )


#: Columns left out on consoles narrower than :data:`NARROW` (they stay in report.md / report.html).
NARROW_DROPS = ("parameters", "images_per_second")
NARROW = 120


def print_table(results: dict[str, Any]) -> None:
    """The results table with the best value of each column in bold green; failures listed below.

    A standard deviation goes on a second, dim line of its cell; consoles narrower than 150
    columns get short column titles, narrower than 120 also lose two columns, so that the table
    stays readable in 80 columns.
    """
    from instacli.report import COLUMNS, ORACLE_NOTE, failures, table_rows  # matplotlib loads only here

    title = results.get("title") or f"Test split of {results.get('data')} (n={results.get('n_test')})"
    short = console.width < 150
    columns = [c for c in COLUMNS if console.width >= NARROW or c.key not in NARROW_DROPS]
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    table.add_column("model", min_width=18, overflow="fold")
    for column in columns:
        table.add_column(column.short if short else column.title, justify="right", no_wrap=True)
    rows = table_rows(results)
    seen_baseline = False
    for row in rows:
        if row.kind == "baseline" and not seen_baseline:
            table.add_section()
            table.add_row("[dim italic]baselines[/]")
            seen_baseline = True
        name = row.name
        if row.note:
            note = "oracle" if short and row.note == ORACLE_NOTE else row.note
            name += f" [red]({note})[/]" if row.failed else f" [dim]({note})[/]"
        cells = []
        for column, c in zip(COLUMNS, row.cells):
            if column not in columns:
                continue
            text = c.value + (f"\n[dim]± {c.std}[/]" if c.std else "")
            cells.append(f"[bold green]{text}[/]" if c.best else (f"[dim]{text}[/]" if c.missing else text))
        table.add_row(name, *cells)
    console.print(table)
    if short:
        legend = ", ".join(f"{c.short} = {c.title}" for c in columns if c.short != c.title)
        if len(columns) < len(COLUMNS):
            legend += "; parameters and images/s are in the report"
        if any(r.note == ORACLE_NOTE for r in rows):
            legend += "; oracle: the baseline reads the true category"
        console.print(f"[dim]{legend}[/]", highlight=False)
    for name, message in failures(results):
        console.print(f"[red]✗[/] {name}: {message}", highlight=False, soft_wrap=True)


app = typer.Typer()


@app.command("compare")
def compare_command(
    data: Path = typer.Option(..., "--data", help="Dataset folder from `instacli data build` (train/validation/test splits)."),
    out: Path = typer.Option(..., "--out", help="Report folder: results.json, report.md, report.html, runs/. Rerun with the same --out to resume."),
    encoders: Optional[str] = typer.Option(
        None, help=f"Encoders to compare, comma-separated (default: {','.join(DEFAULT_ENCODERS)}; none when only --runs is given)."
    ),
    regressors: Optional[str] = typer.Option(None, help=f"Likes regressors, comma-separated; every encoder is trained with each (default: {','.join(DEFAULT_REGRESSORS)})."),
    epochs: Optional[int] = setting_option(TrainSettings, "epochs", "The same for every run."),
    time_budget: Optional[str] = setting_option(TrainSettings, "time_budget", "The same for every run."),
    seeds: int = typer.Option(1, help="Train each combination with seeds 1..K and report mean ± std."),
    include_seed_preset: bool = typer.Option(False, "--include-seed-preset", help="Also train the original design (vit-scratch --preset seed-512) with a small budget."),
    runs: Optional[list[str]] = typer.Option(None, "--runs", help="Finished run folders to evaluate alongside (repeatable, or comma-separated); they are not retrained."),
    set_: Optional[list[str]] = typer.Option(
        None, "--set", help="Per-encoder setting ENCODER.KEY=VALUE (repeatable), e.g. efficientnet-lite0.freeze_encoder=true, "
        f"hf-vit.epochs=20, {SEED_PRESET_KEY}.time_budget=300; keys other than training settings are encoder options."
    ),
    batch_size: Optional[int] = setting_option(TrainSettings, "batch_size", "The same for every run (a --set per encoder wins)."),
    workers: Optional[int] = setting_option(TrainSettings, "workers"),
    report_to: Optional[str] = setting_option(TrainSettings, "report_to", "Every run is one tracked run."),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="Leave the baselines out of the table."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Retrain runs in --out whose settings differ from this command's."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final table."),
) -> None:
    """Train encoder × regressor combinations on the same data, split, seeds and budget; evaluate all
    on the test split next to baselines; write results.json, report.md and report.html."""
    unique: dict[Path, Path] = {}  # each folder once (by where it is), as first spelled
    for value in runs or []:
        for path in (Path(p.strip()) for p in value.split(",") if p.strip()):
            unique.setdefault(path.resolve(), path)
    run_paths = list(unique.values())
    encoder_names = _names(encoders, "--encoders") if encoders is not None else ([] if run_paths else list(DEFAULT_ENCODERS))
    regressor_names = _names(regressors, "--regressors") if regressors is not None else list(DEFAULT_REGRESSORS)
    models = [*encoder_names, *([SEED_PRESET_KEY] if include_seed_preset else [])]
    overrides = parse_overrides(set_ or [], models)
    if not encoder_names and not run_paths and not include_seed_preset:
        raise InstacliError("nothing to compare: give --encoders, --runs or --include-seed-preset")
    base = {k: v for k, v in {"batch_size": batch_size, "workers": workers}.items() if v is not None}
    if report_to:
        base["report_to"] = [name.strip() for name in report_to.split(",") if name.strip()]
    from instacli.launch import process_state

    reporter = RichCompareReporter(console, enabled=not quiet and process_state().is_main_process)
    result = compare(
        data, out, encoder_names, regressor_names, epochs=epochs, time_budget=time_budget, seeds=seeds,
        include_seed_preset=include_seed_preset, runs=run_paths, overrides=overrides, base=base,
        overwrite=overwrite, baselines=not no_baselines, reporter=reporter,
    )
    from instacli.report import render_report

    reporter.stage("report")
    render_report(result.results, result.out)
    print_table(result.results)
    # A run stopped as too slow for the budget is a result (the table shows it); a run that failed is not.
    errors = [run["name"] for run in result.results["runs"] if run["status"] == "failed"]
    stopped = len(result.failed) - len(errors)
    console.print(
        f"[green]report[/] {result.out / 'report.html'}  ({len(result.trained)} trained, {len(result.reused)} reused, "
        f"{len(errors)} failed{f', {stopped} stopped as too slow' if stopped else ''})", highlight=False, soft_wrap=True,
    )
    if errors:
        raise InstacliError(f"{len(errors)} run(s) failed ({', '.join(errors)}); their errors are listed above and in {result.out / 'report.md'}")


@app.command("report")
def report_command(
    path: Path = typer.Argument(..., help="A comparison folder (--out of `instacli compare`) or a run folder (--out of `instacli train`)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the report (default: the comparison folder, or RUN/report)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the table."),
) -> None:
    """Re-render report.md and report.html from saved results, without training anything."""
    from instacli.report import rerender

    results, files = rerender(path, out)
    if not quiet:
        print_table(results)
    console.print(f"[green]report[/] {files.html}", highlight=False, soft_wrap=True)
