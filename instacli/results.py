"""The results of a comparison (``results.json``): typed, built in one place, read back checked.

``compare`` writes them and the report renders them; both import this module, never each other.

* :class:`RunEntry`: one trained (or failed) run: who it is, its metrics on the evaluated split,
  parameters, timing, epoch history, settings. :func:`run_entry` builds it from a run folder,
  :func:`failed_entry` for a run that failed or was stopped.
* :class:`ResultRow`: one line of the table: a model's entries aggregated over seeds
  (:func:`aggregate`), or a baseline (:mod:`instacli.baselines`).
* :class:`Results`: the header (data, split, budget, seeds, …), the rows and the entries;
  :func:`save_results` / :func:`load_results`. A single run folder reads as a one-row ``Results``
  (:func:`single_run_results`), so ``instacli report RUN`` works too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic validates typing's TypedDict from Python 3.12 only

from instacli import __version__
from instacli.errors import InstacliError, invalid_file
from instacli.io import write_json
from instacli.run_folder import CONFIG, EPOCH_METRICS, METRICS, RunFolder, evaluation_figures, read_json, subset

RESULTS = "results.json"
#: Written by ``compare`` into a run folder it trained: wall time (a resumed run keeps counting), or
#: the outcome of a run stopped as too slow.
COMPARE_INFO = "compare_run.json"
#: Metrics aggregated over seeds (mean ± std) and shown in the table.
SCALAR_METRICS = ("accuracy", "f1_macro", "likes_mae", "log_likes_mae", "likes_spearman", "likes_rmse", "likes_r2", "likes_mae_class_median")
#: Row fields averaged over seeds.
ROW_NUMBERS = ("parameters", "trainable_parameters", "train_seconds", "images_per_second", "epochs_run")


@dataclass
class RunIdentity:
    """Who a run is in a comparison: its folder name, the table row it belongs to, and what it trains."""

    name: str  # folder name under runs/
    group: str  # the table row it belongs to (seeds are aggregated)
    label: str  # model column of the table
    kind: str  # model | seed-preset | external
    encoder: str
    regressor: str
    seed: int | None


@with_config(ConfigDict(extra="allow"))
class RunEntry(TypedDict, total=False):
    name: str
    group: str
    label: str
    kind: str
    encoder: str | None
    regressor: str | None
    seed: int | None
    status: str  # ok | failed | stopped
    error: str | None
    action: str  # train | resume | retrain | reuse | evaluate | skip
    run: str | None  # relative to the comparison folder
    metrics: dict[str, Any]
    parameters: float | None
    trainable_parameters: float | None
    train_seconds: float | None
    train_time_measured: str  # wall | epochs | until stopped
    images_per_second: float | None
    epochs_run: int
    best_epoch: int | None
    history: list[dict[str, Any]]
    settings: dict[str, Any] | None
    encoder_options: dict[str, Any] | None
    figures: dict[str, str]


@with_config(ConfigDict(extra="allow"))
class ResultRow(TypedDict, total=False):
    key: str
    name: str
    kind: str  # model | seed-preset | external | baseline
    status: str  # ok | partial | failed | stopped
    error: str | None
    metrics: dict[str, Any]
    std: dict[str, float | None]


@with_config(ConfigDict(extra="allow"))
class Results(TypedDict, total=False):
    title: str
    instacli_version: str
    created: str | None
    data: str | None
    split: str
    n_train: int | None
    n_test: int | None
    class_names: list[str]
    seeds: list[int]
    budget: dict[str, Any]
    rows: list[ResultRow]
    runs: list[RunEntry]


_RESULTS = TypeAdapter(Results)


def relative(path: Path, root: Path) -> str:
    """``path`` relative to the comparison folder ``root`` when inside it (the folder can move), else absolute."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


def count_parameters(folder: RunFolder) -> tuple[int, int | None]:
    """(parameters, trainable ones) of a trained run; trainable is None when unknown."""
    from instacli.model import load_run, parameter_count

    model = load_run(folder.path).model
    total = parameter_count(model)
    trainable = total - parameter_count(model.encoder) if (folder.settings() or {}).get("freeze_encoder") else total
    return total, trainable


def timing(folder: RunFolder, history: list[dict[str, Any]], n_train: int | None) -> dict[str, Any]:
    """Wall-clock training time (decoding, embedding and validation included) when compare trained
    the run, else the sum of epoch times; images/s = training images processed per second of it
    (without ``n_train``: the epochs' own images/s, weighted by their duration)."""
    info = read_json(folder / COMPARE_INFO) or {}
    epoch_seconds = float(sum(r.get("seconds", 0.0) for r in history))
    if info.get("complete") and info.get("wall_seconds"):
        seconds, how = float(info["wall_seconds"]), "wall"
    else:
        seconds, how = epoch_seconds, "epochs"
    if history and history[-1].get("images_seen"):  # counted by the trainer (drop_last, every process)
        images = float(history[-1]["images_seen"])
    elif n_train:
        images = float(n_train * len(history))
    else:
        images = float(sum(r.get("images_per_second", 0.0) * r.get("seconds", 0.0) for r in history))
    return {
        "train_seconds": seconds or None,
        "train_time_measured": how,
        "images_per_second": images / seconds if seconds and images else None,
        "epochs_run": len(history),
        "best_epoch": min(history, key=lambda r: r["val_loss"])["epoch"] if history else None,
    }


def run_entry(
    who: RunIdentity, folder: RunFolder, evaluation: dict[str, Any] | None, evaluated: Path | None, root: Path,
    n_train: int | None = None, parameters: tuple[int | None, int | None] | None = None,
) -> RunEntry:
    """The entry of a finished run: ``evaluation`` (``evaluate``'s metrics, or None) and the figures
    in its folder ``evaluated``, the parameters (counted from the run unless given), timing, history, settings."""
    history = folder.history()
    total, trainable = parameters if parameters is not None else count_parameters(folder)
    return {
        **_identity(who), "status": "ok", "error": None, "run": relative(folder.path, root),
        "metrics": {k: v for k, v in (evaluation or {}).items() if k not in ("data", "run", "split", "outputs")},
        "parameters": total, "trainable_parameters": trainable,
        **timing(folder, history, n_train),  # type: ignore[typeddict-item]
        "history": history,
        "settings": folder.settings(),
        "encoder_options": (folder.config() or {}).get("encoder_options"),
        "figures": {k: relative(path, root) for k, path in evaluation_figures(evaluated).items()} if evaluated else {},
    }


def failed_entry(who: RunIdentity, folder: RunFolder | None, root: Path, error: str, settings: dict[str, Any],
                 status: str = "failed") -> RunEntry:
    """The entry of a run that failed (or was stopped as too slow): the error, and the epochs it finished."""
    return {
        **_identity(who), "status": status, "error": error, "run": relative(folder.path, root) if folder else None,
        "metrics": {}, "history": folder.history() if folder else [], "settings": settings,
    }


def _identity(who: RunIdentity) -> dict[str, Any]:
    return {"name": who.name, "group": who.group, "label": who.label, "kind": who.kind,
            "encoder": who.encoder, "regressor": who.regressor, "seed": who.seed}


def _mean_std(values: list[Any]) -> tuple[float | None, float | None]:
    clean = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return (float(np.mean(clean)) if clean else None), (float(np.std(clean, ddof=1)) if len(clean) > 1 else None)


def aggregate(entries: Sequence[RunEntry]) -> list[ResultRow]:
    """One table row per group: mean ± std of every metric over its successful seeds."""
    groups: dict[str, list[RunEntry]] = {}
    for e in entries:
        groups.setdefault(e["group"], []).append(e)
    rows: list[ResultRow] = []
    for group, members in groups.items():
        ok = [m for m in members if m["status"] == "ok"]
        first = members[0]
        status = "ok" if len(ok) == len(members) else "partial" if ok else (
            "stopped" if all(m["status"] == "stopped" for m in members) else "failed")
        row: dict[str, Any] = {
            "key": group, "name": first["label"], "kind": first["kind"],
            "encoder": first.get("encoder"), "regressor": first.get("regressor"),
            "runs": [m["name"] for m in members], "seeds": [m.get("seed") for m in members],
            "n_ok": len(ok), "n_runs": len(members), "status": status,
            "error": next((m["error"] for m in members if m.get("error")), None),
            "metrics": {}, "std": {},
        }
        for key in SCALAR_METRICS:
            row["metrics"][key], row["std"][key] = _mean_std([m["metrics"].get(key) for m in ok])
        if ok:
            row["metrics"]["confusion_matrix"] = ok[0]["metrics"].get("confusion_matrix")
            row["metrics"]["per_class"] = ok[0]["metrics"].get("per_class")
            for key in ROW_NUMBERS:
                row[key], std = _mean_std([m.get(key) for m in ok])
                if key in ("train_seconds", "images_per_second") and std is not None:
                    row["std"][key] = std
            row["figures"] = ok[0].get("figures", {})
        elif status == "stopped":  # what was measured before it was stopped
            for key in ("parameters", "train_seconds", "images_per_second"):
                row[key] = _mean_std([m.get(key) for m in members])[0]
        rows.append(row)  # type: ignore[arg-type]
    return rows


def baseline_row(key: str, name: str, description: str, metrics: dict[str, Any], error: str | None = None, **extra: Any) -> ResultRow:
    """A baseline's table row (:mod:`instacli.baselines`): ``metrics`` on the split, or the ``error`` that kept it out."""
    return {"key": key, "name": name, "kind": "baseline", "status": "failed" if error else "ok", "error": error,
            "description": description, "metrics": metrics if not error else {}, **extra}  # type: ignore[typeddict-item]


def save_results(folder: Path, results: Results) -> None:
    write_json(folder / RESULTS, results)


def single_run_results(run: Path) -> Results:
    """A one-model ``Results`` from a run folder's files (no data, no inference)."""
    folder = RunFolder(run)
    config, settings = folder.config() or {}, folder.settings() or {}
    evaluated = folder.latest_evaluation()
    evaluation = read_json(evaluated / METRICS) if evaluated else None
    if not folder.history() and evaluation is None:
        raise InstacliError(f"{run}: has neither metrics.jsonl nor an evaluation in eval/; train it with `instacli train` first")
    encoder, regressor = config.get("encoder", settings.get("encoder", "?")), config.get("regressor", settings.get("regressor", "?"))
    who = RunIdentity(folder.path.name, folder.path.name, f"{encoder} + {regressor}", "model", encoder, regressor, settings.get("seed"))
    try:
        parameters = count_parameters(folder) if folder.state() == "finished" else (None, None)
    except Exception:  # noqa: BLE001 — the report still renders without a parameter count
        parameters = (None, None)
    entry = run_entry(who, folder, evaluation, evaluated, root=folder.path, parameters=parameters)
    entry["run"] = "."
    return {
        "title": f"Run {folder.path.name}",
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
        "rows": aggregate([entry]),
    }


def load_results(path: Path | str) -> tuple[Results, Path, Path]:
    """``(results, root, default report folder)`` of a comparison folder (``results.json``) or a run folder."""
    path = Path(path)
    if (path / RESULTS).is_file():
        try:
            results = _RESULTS.validate_json((path / RESULTS).read_bytes())
        except ValidationError as exc:
            raise invalid_file(path / RESULTS, exc, "rerun `instacli compare` with the same --out") from None
        return results, path, path
    if (path / CONFIG).is_file() or (path / EPOCH_METRICS).is_file():
        return single_run_results(path), path, path / "report"
    raise InstacliError(
        f"{path}: neither a comparison folder ({RESULTS}) nor a run folder (config.json, metrics.jsonl); "
        "give the --out of `instacli compare` or of `instacli train`"
    )
