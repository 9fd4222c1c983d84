"""The results table: which columns, how each value is written, and which one is best."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from instacli.results import Results

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


def table_rows(results: Results) -> list[TableRow]:
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


def failures(results: Results) -> list[tuple[str, str]]:
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
