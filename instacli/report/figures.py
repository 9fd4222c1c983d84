"""The report's figures: accuracy versus training time, learning curves, confusion matrices and the
baselines' likes scatters (the trained runs' scatters are the ones ``evaluate`` drew)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the report is drawn on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from instacli.plots import save_figure  # noqa: E402
from instacli.report.table import fmt_seconds  # noqa: E402
from instacli.results import Results  # noqa: E402


COLORS = plt.get_cmap("tab10").colors


def _model_rows(results: Results) -> list[dict[str, Any]]:
    return [r for r in results.get("rows", []) if r.get("kind") != "baseline" and r.get("status") in ("ok", "partial")]


def _short(name: str, width: int = 34) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


#: Round durations for the ticks of a time axis.
NICE_SECONDS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 18000, 36000)


def plot_accuracy_vs_time(results: Results, path: Path) -> Path | None:
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


def _histories(results: Results) -> list[tuple[str, list[dict[str, Any]]]]:
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


def plot_learning_curves(results: Results, path: Path) -> Path | None:
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


def plot_confusions(results: Results, path: Path) -> Path | None:
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


def make_figures(results: Results, out_dir: Path, root: Path) -> Figures:
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
