"""Render a comparison (``results.json``) or a single run as ``report.md`` and one self-contained
``report.html`` (inline CSS, figures embedded as base64 PNG, no script, no network), with the
figures also written to ``figures/`` for the Markdown file.

Contents: the results table (best values highlighted), failed combinations with their messages,
accuracy versus training time, learning curves of every model (from its ``metrics.jsonl``
history), confusion matrices, predicted-versus-actual likes on log axes, what each baseline is, and
the settings of every run.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from instacli import __version__  # noqa: E402
from instacli.errors import InstacliError  # noqa: E402
from instacli.eval_folders import METRICS, figures, latest_evaluation, subset  # noqa: E402
from instacli.io import atomic_file  # noqa: E402
from instacli.plots import save_figure  # noqa: E402
from instacli.run_folder import CONFIG, EPOCH_METRICS, SETTINGS


# ----------------------------------------------------------------------------------------------
# The table


def fmt_ratio(v: float) -> str:
    return f"{v:.3f}"


def fmt_count(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def fmt_params(v: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.0f}"


def fmt_seconds(v: float) -> str:
    if v < 60:
        return f"{v:.1f} s" if v < 10 else f"{v:.0f} s"
    if v % 3600 == 0:
        return f"{int(v // 3600)} h"
    if v % 60 == 0 and v < 3600 * 10:
        return f"{int(v // 60)} min"
    if v < 3600:
        return f"{int(v // 60)}m {int(v % 60):02d}s"
    return f"{int(v // 3600)}h {int(v % 3600 // 60):02d}m"


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


@dataclass(frozen=True)
class Column:
    title: str
    short: str  # for narrow consoles
    key: str  # a metric name, or a row field when ``in_row``
    best: str | None  # "max", "min" or None
    fmt: Callable[[float], str]
    in_row: bool = False
    help: str = ""


COLUMNS = (
    Column("accuracy", "acc", "accuracy", "max", fmt_ratio, help="share of test photos put in the right category"),
    Column("macro F1", "F1", "f1_macro", "max", fmt_ratio, help="F1 averaged over categories (each counts the same)"),
    Column("likes MAE", "MAE", "likes_mae", "min", fmt_count, help="mean absolute error of predicted likes"),
    Column("log-likes MAE", "log MAE", "log_likes_mae", "min", fmt_ratio, help="mean |log1p(predicted) − log1p(actual)|: errors relative to the post's size"),
    Column("Spearman", "ρ", "likes_spearman", "max", fmt_ratio, help="rank correlation of predicted and actual likes"),
    Column("parameters", "params", "parameters", None, fmt_params, in_row=True, help="all parameters of the network (encoder + heads)"),
    Column("train time", "time", "train_seconds", "min", fmt_seconds, in_row=True,
           help="wall-clock training time: decoding, frozen-encoder embedding and validation included"),
    Column("images/s", "img/s", "images_per_second", "max", fmt_rate, in_row=True, help="training images processed per second of train time"),
)


ORACLE_NOTE = "knows the true category"


@dataclass
class Cell:
    text: str  # value, with " ± std" when there is one
    best: bool = False
    missing: bool = False
    value: str = ""  # the value alone
    std: str | None = None  # the std alone


@dataclass
class TableRow:
    name: str
    kind: str
    status: str
    cells: list[Cell]
    note: str | None = None  # footnote marker text, e.g. failed / oracle

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "stopped")


def _value(row: dict[str, Any], column: Column) -> float | None:
    value = row.get(column.key) if column.in_row else row.get("metrics", {}).get(column.key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _std(row: dict[str, Any], column: Column) -> float | None:
    return (row.get("std") or {}).get(column.key)


def _competes(row: dict[str, Any]) -> bool:
    """Rows that may hold a best value: working models and non-oracle baselines."""
    return row.get("status") in ("ok", "partial") and not row.get("oracle")


def table_rows(results: dict[str, Any]) -> list[TableRow]:
    """The rows of the results table as formatted cells, with the best value of each column marked."""
    rows = results.get("rows", [])
    best: dict[str, float] = {}
    for column in COLUMNS:
        if column.best is None:
            continue
        values = [v for r in rows if _competes(r) and (v := _value(r, column)) is not None]
        if len(values) > 1:  # a column with a single value has nothing to compare
            best[column.key] = max(values) if column.best == "max" else min(values)
    out = []
    for r in rows:
        cells = []
        for column in COLUMNS:
            value = _value(r, column)
            if value is None or r.get("status") == "failed" or (r.get("status") == "stopped" and not column.in_row):
                cells.append(Cell("–", missing=True, value="–"))
                continue
            std = _std(r, column)
            std_text = column.fmt(std) if std is not None else None
            text = column.fmt(value) + (f" ± {std_text}" if std_text else "")
            is_best = column.key in best and _competes(r) and math.isclose(value, best[column.key], rel_tol=1e-9, abs_tol=1e-12)
            cells.append(Cell(text, best=is_best, value=column.fmt(value), std=std_text))
        name = r["name"]
        if r.get("n_runs", 1) > 1:
            name += f" ({r.get('n_ok', 0)}/{r['n_runs']} seeds)" if r.get("status") == "partial" else f" ({r['n_runs']} seeds)"
        note = None
        if r.get("status") == "failed":
            note = "failed"
        elif r.get("status") == "stopped":
            note = "stopped: too slow"
        elif r.get("status") == "partial":
            note = "some seeds failed"
        elif r.get("oracle"):
            note = ORACLE_NOTE
        out.append(TableRow(name=name, kind=r.get("kind", "model"), status=r.get("status", "ok"), cells=cells, note=note))
    return out


def failures(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, message) of every failed run and baseline; seeds failing the same way are one line."""
    grouped: dict[tuple[str, str], list[Any]] = {}
    for r in results.get("runs", []):
        if r.get("status") != "ok" and r.get("error"):
            grouped.setdefault((r.get("label") or r["name"], r["error"]), []).append(r.get("seed"))
    out = []
    n_seeds = len(results.get("seeds") or [])
    for (name, message), seeds in grouped.items():
        if n_seeds > 1 and len(seeds) < n_seeds and all(s is not None for s in seeds):
            name += f" (seed {', '.join(map(str, seeds))})"
        out.append((name, message))
    out += [(r["name"], r["error"]) for r in results.get("rows", []) if r.get("kind") == "baseline" and r.get("error")]
    return out


# ----------------------------------------------------------------------------------------------
# Figures

COLORS = plt.get_cmap("tab10").colors


def _model_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in results.get("rows", []) if r.get("kind") != "baseline" and r.get("status") in ("ok", "partial")]


def _short(name: str, width: int = 34) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


#: Round durations for the ticks of a time axis.
NICE_SECONDS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 18000, 36000)


def plot_accuracy_vs_time(results: dict[str, Any], path: Path) -> Path | None:
    """Test accuracy against training time (log scale), one point per model, seed spread as bars."""
    rows = [r for r in _model_rows(results) if r.get("train_seconds") and r["metrics"].get("accuracy") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, r in enumerate(rows):
        x, y = r["train_seconds"], r["metrics"]["accuracy"]
        xerr, yerr = (r.get("std") or {}).get("train_seconds"), (r.get("std") or {}).get("accuracy")
        ax.errorbar([x], [y], xerr=[[xerr or 0], [xerr or 0]], yerr=[[yerr or 0], [yerr or 0]], fmt="o", ms=8,
                    color=COLORS[i % 10], capsize=3, label=_short(r["name"], 60), clip_on=False, zorder=3)
        ax.annotate(_short(r["name"].split(" + ")[0], 24), (x, y), xytext=(6, 5), textcoords="offset points", fontsize=8,
                    color=COLORS[i % 10])
    majority = next((r for r in results.get("rows", []) if r.get("key") == "majority" and r["metrics"].get("accuracy") is not None), None)
    if majority:
        ax.axhline(majority["metrics"]["accuracy"], color="gray", ls="--", lw=1)
        ax.annotate("majority class", (0.01, majority["metrics"]["accuracy"]), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", color="gray", fontsize=8)
    ax.set_xscale("log")
    low, high = min(r["train_seconds"] for r in rows), max(r["train_seconds"] for r in rows)
    ax.set_xlim(low / 1.6, high * 1.6)
    ticks = [t for t in NICE_SECONDS if low / 1.6 <= t <= high * 1.6]
    if len(ticks) >= 2:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
    else:
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0), numticks=30))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_seconds(v)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set(xlabel="training time (log scale)", ylabel="test accuracy", ylim=(min(0.4, ax.get_ylim()[0]), 1.04),
           title="Accuracy versus training time")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    return save_figure(fig, path)


def _histories(results: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(row name, history of its first successful run) for every model row with a history."""
    by_name = {e["name"]: e for e in results.get("runs", [])}
    out = []
    for r in _model_rows(results):
        for run_name in r.get("runs", []):
            entry = by_name.get(run_name, {})
            if entry.get("status") == "ok" and entry.get("history"):
                out.append((r["name"], entry["history"]))
                break
    return out


def plot_learning_curves(results: dict[str, Any], path: Path) -> Path | None:
    """Per model: train (dashed) and validation loss, validation accuracy by epoch and by time."""
    histories = _histories(results)
    if not histories:
        return None
    fig, (ax_loss, ax_acc, ax_time) = plt.subplots(1, 3, figsize=(13, 3.9))
    for i, (name, history) in enumerate(histories):
        color = COLORS[i % 10]
        epochs = [h["epoch"] for h in history]
        marker = "o" if len(epochs) < 12 else None
        ax_loss.plot(epochs, [h.get("train_loss", np.nan) for h in history], color=color, ls="--", lw=1, alpha=0.8, marker=marker, ms=2)
        ax_loss.plot(epochs, [h.get("val_loss", np.nan) for h in history], color=color, lw=1.6, label=_short(name, 60), marker=marker, ms=3)
        if any("val_accuracy" in h for h in history):
            acc = [h.get("val_accuracy", np.nan) for h in history]
            ax_acc.plot(epochs, acc, color=color, lw=1.6, marker=marker, ms=3)
            elapsed = np.cumsum([h.get("seconds", 0.0) for h in history])
            ax_time.plot(elapsed, acc, color=color, lw=1.6, marker=marker, ms=3)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss (solid: validation, dashed: train)")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy by epoch", ylim=(0, 1.02))
    ax_time.set(xlabel="training seconds (epochs only)", ylabel="validation accuracy", title="… by training time", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc, ax_time):
        ax.grid(alpha=0.3)
    last = max(h["epoch"] for _, history in histories for h in history)
    for ax in (ax_loss, ax_acc):
        if last < 12:
            ax.set_xticks(range(1, last + 1))
            ax.set_xlim(0.7, last + 0.3)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    totals = [sum(h.get("seconds", 0.0) for h in history) for _, history in histories]
    firsts = [history[0].get("seconds", 0.0) for _, history in histories]
    if min(firsts) > 0 and max(totals) / min(firsts) > 30:  # frozen probes next to long runs: log time
        ax_time.set_xscale("log")
        ax_time.set_xlabel("training seconds (epochs only, log scale)")
    fig.legend(*ax_loss.get_legend_handles_labels(), loc="lower center", ncol=min(3, len(histories)), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, -0.02 - 0.05 * math.ceil(len(histories) / 3)))
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusions(results: dict[str, Any], path: Path) -> Path | None:
    """One heat map per model (first seed), rows = true category, cell shade = share of the row."""
    names = results.get("class_names") or []
    rows = [r for r in _model_rows(results) if r["metrics"].get("confusion_matrix")]
    if not rows:
        return None
    per_row = min(4, len(rows))
    n_lines = math.ceil(len(rows) / per_row)
    size = 1.4 + 0.45 * len(names)
    fig, axes = plt.subplots(n_lines, per_row, figsize=(per_row * (size + 0.6), n_lines * (size + 0.9)), squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows):
        m = np.asarray(r["metrics"]["confusion_matrix"], dtype=float)
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        labels = names if len(names) == m.shape[0] else [str(i) for i in range(m.shape[0])]
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=9,
                        color="white" if share[i, j] > 0.55 else "black")
        acc = r["metrics"].get("accuracy")
        ax.set_title(_short(r["name"], 30) + (f"\naccuracy {acc:.3f}" if acc is not None else ""), fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_baseline_likes(row: dict[str, Any], path: Path) -> Path | None:
    pairs = row.get("likes_predictions")
    if not pairs or not pairs.get("actual"):
        return None
    from instacli.plots import plot_likes

    plot_likes(np.asarray(pairs["actual"], float), np.asarray(pairs["predicted"], float), path, title=_short(row["name"], 40))
    return path


@dataclass
class Figure:
    title: str
    path: Path
    caption: str = ""


@dataclass
class Figures:
    accuracy_vs_time: Figure | None
    curves: Figure | None
    confusions: Figure | None
    likes: list[Figure]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_inside(root: Path, rel: Any) -> Path | None:
    """``root / rel`` when it is a PNG file inside ``root``, else None. The path comes from a
    ``results.json`` that anyone may have edited: ``../../../secret.txt`` or ``/home/me/.ssh/id_rsa``
    would otherwise be base64-embedded into report.html, which is made to be shared."""
    if not isinstance(rel, str) or not rel:
        return None
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        return None
    with open(path, "rb") as handle:
        return path if handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE else None


def make_figures(results: dict[str, Any], out_dir: Path, root: Path) -> Figures:
    """Draw the report's figures into ``out_dir/figures``; likes scatters of trained runs are the
    ones ``evaluate`` wrote into each run (``eval/<data>-<split>/likes.png``), found relative to ``root``."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    acc = plot_accuracy_vs_time(results, fig_dir / "accuracy_vs_time.png")
    curves = plot_learning_curves(results, fig_dir / "learning_curves.png")
    confusions = plot_confusions(results, fig_dir / "confusion_matrices.png")
    likes = []
    for r in _model_rows(results):
        path = png_inside(root, (r.get("figures") or {}).get("likes"))
        if path is not None:
            likes.append(Figure(r["name"], path, "first seed" if r.get("n_runs", 1) > 1 else ""))
    for r in results.get("rows", []):
        if r.get("kind") == "baseline" and r.get("status") == "ok":
            path = plot_baseline_likes(r, fig_dir / f"likes_baseline_{r['key']}.png")
            if path:
                likes.append(Figure(r["name"], path, "baseline"))
    several_seeds = len(results.get("seeds") or []) > 1
    return Figures(
        accuracy_vs_time=Figure("Accuracy versus training time", acc, "test accuracy against wall-clock training time"
                                + ("; bars: std over seeds" if several_seeds else "")) if acc else None,
        curves=Figure("Learning curves", curves, "per model, first seed; from each run's metrics.jsonl") if curves else None,
        confusions=Figure("Confusion matrices", confusions, "test split, first seed; counts, shaded by share of the true row") if confusions else None,
        likes=likes,
    )


# ----------------------------------------------------------------------------------------------
# Markdown and HTML


def _meta_lines(results: dict[str, Any]) -> list[tuple[str, str]]:
    budget = results.get("budget") or {}
    parts = []
    if budget.get("epochs") is not None:
        parts.append(f"{budget['epochs']} epoch" + ("s" if budget["epochs"] != 1 else ""))
    if budget.get("time_budget") is not None:
        parts.append(f"time budget {fmt_seconds(budget['time_budget'])}")
    per_model = []
    for name, settings in (results.get("overrides") or {}).items():
        bits = []
        if settings.get("epochs") is not None:
            bits.append(f"{settings['epochs']} epoch" + ("s" if settings["epochs"] != 1 else ""))
        if settings.get("time_budget") is not None:
            bits.append(fmt_seconds(float(settings["time_budget"])))
        if settings.get("freeze_encoder"):
            bits.append("frozen encoder")
        if bits:
            per_model.append(f"{name}: {' / '.join(bits)}")
    if per_model:
        parts.append(("per model — " if parts else "") + "; ".join(per_model))
    lines = [
        ("data", str(results.get("data", "?"))),
        ("fingerprint", str(results.get("data_fingerprint") or "–")),
        ("split", f"{results.get('split', 'test')} ({results.get('n_test', '?')} photos; trained on {results.get('n_train', '?')})"),
        ("categories", ", ".join(results.get("class_names") or []) or "–"),
        ("engagement", str(results.get("engagement") or "–")),
        ("budget", ", ".join(parts) or "per-run settings (see below)"),
        ("seeds", ", ".join(map(str, results.get("seeds") or [])) or "–"),
        ("instacli", f"{results.get('instacli_version', '?')} (report by {__version__})"),
        ("created", str(results.get("created", "?"))),
    ]
    return lines


NOTES = [
    "Best value of each column in **bold** (among working models and baselines that do not read the true label).",
    "± is the standard deviation over seeds.",
    "Baselines: *majority class* always predicts the most frequent training category and the training median likes; "
    "*per-class median likes* reads the true category (an oracle for likes, with no classifier); "
    "*numbers only* regress log1p(likes) on log1p(comments, shares, followers) without the photo; "
    "*likes generator's own guess* (synthetic realistic engagement only) is the generator's best prediction, the floor of log-likes MAE.",
    "Train time is wall-clock time of training (decoding, frozen-encoder embedding and validation included); "
    "images/s = training images processed per second of it.",
]


def _fig_link(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()


def render_markdown(results: dict[str, Any], figures: Figures, out_dir: Path) -> str:
    title = results.get("title") or "Model comparison"
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in _meta_lines(results)]
    lines += ["", "## Results on the test split", ""]
    headers = ["model", *(c.title for c in COLUMNS)]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|")
    for row in table_rows(results):
        name = row.name.replace("|", "\\|") + (f" *({row.note})*" if row.note else "")
        if row.kind == "baseline":
            name = f"baseline: {name}"
        cells = [f"**{c.text}**" if c.best else c.text for c in row.cells]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    lines.append("")
    lines += [f"- {n}" for n in NOTES]
    fails = failures(results)
    if fails:
        lines += ["", "## Failed", ""]
        lines += [f"- **{name}**: {message}" for name, message in fails]
    for fig in (figures.accuracy_vs_time, figures.curves, figures.confusions):
        if fig:
            lines += ["", f"## {fig.title}", "", f"![{fig.title}]({_fig_link(fig.path, out_dir)})", "", f"*{fig.caption}*"]
    if figures.likes:
        lines += ["", "## Predicted versus actual likes (log axes)", ""]
        for fig in figures.likes:
            caption = fig.title + (f" ({fig.caption})" if fig.caption else "")
            lines += [f"![{caption}]({_fig_link(fig.path, out_dir)})", f"*{caption}*", ""]
    settings = _run_settings(results)
    if settings:
        lines += ["", "## Settings of each run", ""]
        for name, value in settings:
            lines += [f"<details><summary>{name}</summary>", "", "```json", json.dumps(value, indent=2), "```", "", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def _run_settings(results: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for e in results.get("runs", []):
        if e.get("settings"):
            keep = {k: v for k, v in e["settings"].items() if v not in (None, {}, [])}
            if e.get("encoder_options"):
                keep["encoder_options (resolved)"] = e["encoder_options"]
            out.append((e["name"], keep))
    return out


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --head:#f6f8fa; --best:#dafbe1; --bestfg:#116329; --bad:#cf222e; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:#fff; font:15px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif; }
main { max-width:1240px; margin:0 auto; padding:28px 32px 60px; }
h1 { font-size:26px; margin:0 0 6px; } h2 { font-size:19px; margin:34px 0 10px; padding-bottom:4px; border-bottom:1px solid var(--line); }
dl.meta { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; margin:10px 0 0; font-size:13px; color:var(--muted); }
dl.meta dt { font-weight:600; } dl.meta dd { margin:0; overflow-wrap:anywhere; }
.tablewrap { overflow-x:auto; }
table.results { border-collapse:collapse; width:100%; font-size:14px; font-variant-numeric:tabular-nums; }
table.results th, table.results td { padding:6px 10px; border-bottom:1px solid var(--line); white-space:nowrap; }
table.results th { background:var(--head); text-align:right; font-weight:600; border-bottom:2px solid var(--line); }
table.results th:first-child, table.results td:first-child { text-align:left; white-space:normal; min-width:220px; }
table.results td { text-align:right; }
table.results td.best { background:var(--best); color:var(--bestfg); font-weight:700; }
table.results td.missing { color:#9aa4ae; }
table.results tr.baseline td:first-child { color:var(--muted); }
table.results tr.section td { background:#fff; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; padding-top:12px; text-align:left; }
table.results tr.failed td { color:#9aa4ae; }
.tag { display:inline-block; font-size:11px; padding:0 6px; border-radius:9px; margin-left:6px; background:#eef1f4; color:var(--muted); }
.tag.failed { background:#ffebe9; color:var(--bad); }
ul.notes { font-size:13px; color:var(--muted); padding-left:18px; }
ul.failures li { margin:4px 0; } ul.failures code { color:var(--bad); white-space:pre-wrap; }
figure { margin:12px 0; } figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
figcaption { font-size:13px; color:var(--muted); margin-top:4px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill, minmax(280px, 1fr)); gap:14px; }
.gallery figure { margin:0; }
details { margin:6px 0; border:1px solid var(--line); border-radius:6px; padding:6px 10px; }
details summary { cursor:pointer; font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:13px; }
pre { font-size:12px; background:var(--head); padding:10px; border-radius:6px; overflow-x:auto; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def render_html(results: dict[str, Any], figures: Figures) -> str:
    e = html.escape
    title = results.get("title") or "Model comparison"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)} — instacli</title><style>{CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1>", '<dl class="meta">',
        *(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _meta_lines(results)), "</dl>",
        "<h2>Results on the test split</h2>", '<div class="tablewrap"><table class="results"><thead><tr><th>model</th>',
        *(f'<th title="{e(c.help)}">{e(c.title)}</th>' for c in COLUMNS), "</tr></thead><tbody>",
    ]
    rows = table_rows(results)
    section = None
    for row in rows:
        kind = "baselines" if row.kind == "baseline" else "models"
        if kind != section and any(r.kind == "baseline" for r in rows) and any(r.kind != "baseline" for r in rows):
            parts.append(f'<tr class="section"><td colspan="{len(COLUMNS) + 1}">{kind}</td></tr>')
        section = kind
        classes = " ".join(c for c in ("baseline" if row.kind == "baseline" else "", "failed" if row.failed else "") if c)
        tag = f' <span class="tag{" failed" if row.failed else ""}">{e(row.note)}</span>' if row.note else ""
        cells = "".join(
            f'<td class="{"best" if c.best else ("missing" if c.missing else "")}">{e(c.text)}</td>' for c in row.cells
        )
        parts.append(f'<tr class="{classes}"><td>{e(row.name)}{tag}</td>{cells}</tr>')
    parts.append("</tbody></table></div>")
    parts.append('<ul class="notes">' + "".join(f"<li>{_md_inline(n)}</li>" for n in NOTES) + "</ul>")
    fails = failures(results)
    if fails:
        parts.append("<h2>Failed</h2><ul class=\"failures\">")
        parts += [f"<li><strong>{e(name)}</strong>: <code>{e(message)}</code></li>" for name, message in fails]
        parts.append("</ul>")
    for fig in (figures.accuracy_vs_time, figures.curves, figures.confusions):
        if fig:
            parts.append(f"<h2>{e(fig.title)}</h2><figure>{_img(fig.path, fig.title)}<figcaption>{e(fig.caption)}</figcaption></figure>")
    if figures.likes:
        parts.append('<h2>Predicted versus actual likes (log axes)</h2><div class="gallery">')
        for fig in figures.likes:
            caption = fig.title + (f" ({fig.caption})" if fig.caption else "")
            parts.append(f"<figure>{_img(fig.path, caption)}<figcaption>{e(caption)}</figcaption></figure>")
        parts.append("</div>")
    settings = _run_settings(results)
    if settings:
        parts.append("<h2>Settings of each run</h2>")
        parts += [f"<details><summary>{e(name)}</summary><pre>{e(json.dumps(value, indent=2))}</pre></details>" for name, value in settings]
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _md_inline(text: str) -> str:
    """The tiny Markdown of :data:`NOTES` (**bold**, *italic*) as HTML."""
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)


@dataclass
class ReportFiles:
    markdown: Path
    html: Path


def render_report(results: dict[str, Any], out_dir: Path, root: Path | None = None) -> ReportFiles:
    """Write ``report.md``, ``report.html`` and ``figures/`` into ``out_dir``; relative paths in
    ``results`` (runs, their figures) are relative to ``root`` (default ``out_dir``)."""
    out_dir = Path(out_dir)
    root = Path(root) if root is not None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = make_figures(results, out_dir, root)
    with atomic_file(out_dir / "report.md") as handle:
        handle.write(render_markdown(results, figures, out_dir))
    with atomic_file(out_dir / "report.html") as handle:
        handle.write(render_html(results, figures))
    return ReportFiles(out_dir / "report.md", out_dir / "report.html")


# ----------------------------------------------------------------------------------------------
# Loading saved results


def single_run_results(run: Path) -> dict[str, Any]:
    """A one-model ``results`` dict from a run folder's files (no data, no inference)."""
    from instacli.compare import Plan, _read_json, aggregate, count_parameters, read_history, run_state, timing

    run = Path(run)
    config = _read_json(run / CONFIG) or {}
    settings = _read_json(run / SETTINGS) or {}
    evaluated = latest_evaluation(run)
    evaluation = _read_json(evaluated / METRICS) if evaluated else None
    history = read_history(run)
    if not history and evaluation is None:
        raise InstacliError(f"{run}: has neither metrics.jsonl nor an evaluation in eval/; train it with `instacli train` first")
    encoder, regressor = config.get("encoder", settings.get("encoder", "?")), config.get("regressor", settings.get("regressor", "?"))
    label = f"{encoder} + {regressor}"
    plan = Plan(run.name, run.name, label, "model", encoder, regressor, settings.get("seed"))
    try:
        parameters, trainable = count_parameters(run) if run_state(run) == "finished" else (None, None)
    except Exception:  # noqa: BLE001 — the report still renders without a parameter count
        parameters, trainable = None, None
    metrics = {k: v for k, v in (evaluation or {}).items() if k not in ("data", "run", "split", "outputs")}
    entry = {
        "name": plan.name, "group": plan.group, "label": label, "kind": "model", "encoder": encoder,
        "regressor": regressor, "seed": plan.seed, "status": "ok", "error": None, "run": ".",
        "metrics": metrics, "parameters": parameters, "trainable_parameters": trainable,
        **timing(run, history, None), "history": history, "settings": settings,
        "encoder_options": config.get("encoder_options"),
        "figures": {k: path.relative_to(run).as_posix() for k, path in figures(evaluated).items()} if evaluated else {},
    }
    results = {
        "title": f"Run {run.name}",
        "instacli_version": config.get("instacli_version", __version__),
        "data": (evaluation or {}).get("data") or settings.get("data"),
        "data_fingerprint": None,
        "class_names": config.get("class_names", []),
        "split": (evaluation.get("split") or subset(None)) if evaluation else "not evaluated (run `instacli evaluate RUN --data DATA`)",
        "n_test": (evaluation or {}).get("n"),
        "n_train": None,
        "budget": {"epochs": settings.get("epochs"), "time_budget": settings.get("time_budget")},
        "seeds": [settings["seed"]] if "seed" in settings else [],
        "created": None,
        "runs": [entry],
    }
    results["rows"] = aggregate([entry])
    return results


def load_results(path: Path | str) -> tuple[dict[str, Any], Path, Path]:
    """``(results, root, default out folder)`` of a comparison folder (``results.json``) or a run folder."""
    path = Path(path)
    if (path / "results.json").is_file():
        try:
            results = json.loads((path / "results.json").read_text())
        except json.JSONDecodeError as exc:
            raise InstacliError(f"{path / 'results.json'}: unreadable ({exc}); rerun `instacli compare` with the same --out") from None
        return results, path, path
    if (path / CONFIG).is_file() or (path / EPOCH_METRICS).is_file():
        return single_run_results(path), path, path / "report"
    raise InstacliError(
        f"{path}: neither a comparison folder (results.json) nor a run folder (config.json, metrics.jsonl); "
        "give the --out of `instacli compare` or of `instacli train`"
    )


def rerender(path: Path | str, out: Path | str | None = None) -> tuple[dict[str, Any], ReportFiles]:
    """Re-render the report of a comparison or run folder from saved files, without any training."""
    results, root, default_out = load_results(path)
    return results, render_report(results, Path(out or default_out), root=root)
