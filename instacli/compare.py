"""``instacli compare``: train several encoder × regressor combinations on the same data, split,
seeds and budget, evaluate them all on the test split next to the baselines, and write
``results.json`` (then :mod:`instacli.report` renders it).

Layout of a comparison folder::

    REPORT_DIR/
      results.json                       everything in the table, machine-readable
      report.md, report.html, figures/   written by instacli.report
      runs/<encoder>__<regressor>__seed<k>/   ordinary run folders (instacli evaluate/predict work on them)

An interrupted comparison resumes when started again with the same ``--out``: a run folder with
``model.safetensors`` + ``config.json`` and no ``checkpoint/`` is finished and reused (its
evaluation's ``metrics.json`` too, when it is newer than the weights); one with a resumable checkpoint
continues from it; anything else is retrained from scratch. A finished run whose settings differ
from the ones asked for now is an error unless ``overwrite`` (then it is retrained).

Fairness: every combination gets the same data, split, seeds and budget (``epochs`` and/or
``time_budget``); :data:`ENCODER_DEFAULTS` holds the few per-encoder settings that make a CPU
budget feasible (frozen pretrained probes), and ``--set ENCODER.KEY=VALUE`` overrides anything.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from instacli import __version__, registry
from instacli.errors import InstacliError
from instacli.eval_folders import METRICS, eval_folder, figures
from instacli.io import output_lock, write_json
from instacli.settings import TrainSettings, apply_recipe, check_components, option_value, parse_duration
from instacli.progress import Reporter
from instacli.run_folder import CONFIG, EPOCH_METRICS, SETTINGS, WEIGHTS

#: The encoders compared when none are named.
DEFAULT_ENCODERS = ("vit-scratch", "hf-vit", "inception-v3", "efficientnet-lite0")
DEFAULT_REGRESSORS = ("conv1d",)

#: Per-encoder settings (``TrainSettings`` fields, or encoder options for any other key) that keep a
#: CPU budget fair and feasible; ``--set ENCODER.KEY=VALUE`` wins over them, they win over the
#: comparison-wide budget only where they name the same key (none of them does).
#:
#: * ``vit-scratch`` and ``hf-vit`` (a small ViT, 64 px, from scratch) train end to end: they are
#:   the from-scratch designs being compared, and they are cheap enough on a CPU.
#: * ``efficientnet-lite0`` and ``inception-v3`` are ImageNet-pretrained: on a CPU budget the fair
#:   use is a linear probe, the frozen encoder embedding each photo once and only the heads
#:   training. Fine-tuning Inception-v3 at 299 px would spend the whole budget in one or two epochs.
#:   Inception's weights come from torchvision's download (or its cache); offline without them the
#:   combination fails with the plugin's explanation — use ``--set inception-v3.pretrained=PATH``,
#:   or ``--set inception-v3.pretrained=none --set inception-v3.freeze_encoder=false`` to train it
#:   from scratch (slowly).
ENCODER_DEFAULTS: dict[str, dict[str, Any]] = {
    "vit-scratch": {},
    "hf-vit": {},
    "efficientnet-lite0": {},  # its registry recipe: frozen, linear probe, semantic prior
    "inception-v3": {"pretrained": "imagenet", "freeze_encoder": True},
}

#: The original design (``vit-scratch --preset seed-512``: 137M parameters at 512 px) trained
#: through our pipeline with a small budget, to show how it fails. ``--set seed-512.KEY=VALUE``
#: changes it. Its epochs are capped here, and a first epoch that overruns the time budget is
#: stopped (see :data:`HARD_LIMIT_FACTOR`).
SEED_PRESET_KEY = "seed-512"
SEED_PRESET_SETTINGS: dict[str, Any] = {"encoder": "vit-scratch", "preset": "seed-512", "epochs": 2, "batch_size": 32}

#: A run whose *first* epoch is still going after ``time_budget × factor + HARD_LIMIT_GRACE``
#: seconds is stopped and reported as too slow (the trainer checks its budget only between epochs).
HARD_LIMIT_FACTOR = 2.0
HARD_LIMIT_GRACE = 60.0

#: Settings that the comparison itself decides for every run; ``--set`` cannot change them.
MANAGED = ("data", "out", "encoder", "regressor", "seed", "overwrite", "resume")
#: Settings that may differ between the first attempt and a resume without changing the result.
VOLATILE = ("out", "overwrite", "resume", "workers")
#: Metrics aggregated over seeds (mean ± std) and shown in the table.
SCALAR_METRICS = ("accuracy", "f1_macro", "likes_mae", "log_likes_mae", "likes_spearman", "likes_rmse", "likes_r2")
RUN_INFO = "compare_run.json"
#: Traceback of a run that failed by a bug (not a user error), inside its run folder.
ERROR_FILE = "error.txt"


# ----------------------------------------------------------------------------------------------
# Parsing what the user typed


def parse_overrides(pairs: Iterable[str], models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["efficientnet-lite0.freeze_encoder=true"]`` → ``{"efficientnet-lite0": {"freeze_encoder": True}}``.

    ``models`` are the names ``--set`` may address (the encoders compared, and ``seed-512``). A key
    that is a ``TrainSettings`` field sets it; any other key is an encoder option, checked against
    the encoder's options when the encoder is known. ``encoder_options.K`` / ``regressor_options.K``
    set an option explicitly.
    """
    out: dict[str, dict[str, Any]] = {}
    fields = TrainSettings.model_fields
    for pair in pairs:
        target, sep, value = pair.partition("=")
        model, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not model or not key:
            raise InstacliError(f"--set {pair!r}: expected ENCODER.KEY=VALUE, e.g. --set efficientnet-lite0.freeze_encoder=true")
        group = None
        if "." in model:  # vit-scratch.encoder_options.width → a nested option
            model, _, group = model.partition(".")
            if group not in ("encoder_options", "regressor_options"):
                raise InstacliError(f"--set {pair!r}: expected ENCODER.KEY=VALUE or ENCODER.encoder_options.KEY=VALUE")
        if model not in models:
            raise InstacliError(f"--set {pair!r}: '{model}' is not compared here; it must be one of {', '.join(models)}")
        if group:
            out.setdefault(model, {}).setdefault(group, {})[key.replace("-", "_")] = option_value(value)
            continue
        key = key.replace("-", "_")
        if key in MANAGED:
            raise InstacliError(f"--set {pair!r}: '{key}' is decided by compare for every run and cannot be set per encoder")
        if key in fields:
            out.setdefault(model, {})[key] = option_value(value)
            continue
        encoder = SEED_PRESET_SETTINGS["encoder"] if model == SEED_PRESET_KEY else model
        if encoder in registry.encoders.names():
            known = registry.encoders.get(encoder).options()
            if key not in known:
                raise InstacliError(
                    f"--set {pair!r}: '{key}' is neither a training setting nor an option of encoder '{encoder}' "
                    f"(its options: {', '.join(known) or 'none'})"
                )
        out.setdefault(model, {}).setdefault("encoder_options", {})[key] = option_value(value)
    return out


# ----------------------------------------------------------------------------------------------
# What to train


@dataclass
class Plan:
    """One run of the comparison: a (model, seed) pair and the settings it trains with."""

    name: str  # folder name under runs/
    group: str  # the table row it belongs to (seeds are aggregated)
    label: str  # model column of the table
    kind: str  # model | seed-preset | external
    encoder: str
    regressor: str
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)  # TrainSettings kwargs besides data/out
    path: Path | None = None  # set for external runs


def _merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win; ``encoder_options``/``regressor_options`` are merged key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in ("encoder_options", "regressor_options"):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def seed_values(seeds: int) -> list[int]:
    """The seeds of ``--seeds K``: 1, 2, …, K (the folder suffix ``seed<k>`` is the seed itself)."""
    if seeds < 1:
        raise InstacliError(f"--seeds {seeds}: need at least one seed")
    return list(range(1, seeds + 1))


def plan_runs(
    encoders: Sequence[str],
    regressors: Sequence[str],
    seeds: Sequence[int],
    budget: dict[str, Any],
    base: dict[str, Any] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    include_seed_preset: bool = False,
) -> list[Plan]:
    """Every (encoder, regressor, seed), then the seed preset; settings = base < budget < defaults < --set."""
    base, overrides = base or {}, overrides or {}
    plans = []
    for encoder in encoders:
        for regressor in regressors:
            settings = _merge(base, budget, ENCODER_DEFAULTS.get(encoder, {}), overrides.get(encoder, {}))
            group = f"{encoder}__{regressor}"
            label = f"{encoder} + {regressor}"
            plans += [Plan(f"{group}__seed{s}", group, label, "model", encoder, regressor, s, settings) for s in seeds]
    if include_seed_preset:
        regressor = DEFAULT_REGRESSORS[0]
        settings = _merge(base, budget, SEED_PRESET_SETTINGS, overrides.get(SEED_PRESET_KEY, {}))
        settings.pop("encoder")
        if "encoder_options" in base:  # test-sized options of the base must not shrink the original design
            settings["encoder_options"] = overrides.get(SEED_PRESET_KEY, {}).get("encoder_options", {})
        encoder = SEED_PRESET_SETTINGS["encoder"]
        group = f"{encoder}-{SEED_PRESET_KEY}__{regressor}"
        label = f"{encoder} --preset {SEED_PRESET_KEY} + {regressor} (original design)"
        # one seed only: it is a demonstration of a failure, not a contender worth K runs
        plans.append(Plan(f"{group}__seed{seeds[0]}", group, label, "seed-preset", encoder, regressor, seeds[0], settings))
    return plans


# ----------------------------------------------------------------------------------------------
# Run folders


def run_state(run: Path) -> str:
    """``finished`` (weights + config, no checkpoint), ``resumable`` (a checkpoint with trainer
    state), ``partial`` (anything else in the folder) or ``absent``."""
    if not run.exists():
        return "absent"
    has_checkpoint = (run / "checkpoint").exists()
    if (run / WEIGHTS).is_file() and (run / CONFIG).is_file() and not has_checkpoint:
        return "finished"
    if (run / "checkpoint" / "trainer_state.json").is_file():
        return "resumable"
    return "partial"


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in settings.items() if k not in VOLATILE}
    if out.get("data") is not None:
        out["data"] = str(Path(out["data"]).resolve())
    return out


def settings_difference(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``key: saved → wanted`` for every setting that differs (paths compared resolved)."""
    a, b = _comparable(saved), _comparable(wanted)
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_history(run: Path) -> list[dict[str, Any]]:
    path = run / EPOCH_METRICS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            continue
    return out


def count_parameters(run: Path) -> tuple[int, int | None]:
    """(parameters, trainable ones) of a trained run; trainable is None when unknown."""
    from instacli.model import load_run, parameter_count

    model = load_run(run).model
    total = parameter_count(model)
    settings = _read_json(run / SETTINGS) or {}
    trainable = total - parameter_count(model.encoder) if settings.get("freeze_encoder") else total
    return total, trainable


# ----------------------------------------------------------------------------------------------
# Progress hooks


class CompareReporter:
    """Hooks the CLI implements; the library prints nothing."""

    def plan(self, plans: Sequence[Plan]) -> None: ...

    def run_start(self, plan: Plan, index: int, total: int, action: str) -> Reporter:
        """``action``: train, resume, retrain, reuse, evaluate. Returns the training reporter."""
        return Reporter()

    def run_end(self, plan: Plan, row: dict[str, Any]) -> None: ...

    def stage(self, message: str) -> None: ...


class RunStopped(Exception):
    """Raised from inside training when the first epoch overruns the hard limit; carries what was
    measured until then (the table shows it)."""

    def __init__(self, message: str, seconds: float, images: int) -> None:
        super().__init__(message)
        self.seconds, self.images = seconds, images


class _Guard(Reporter):
    """Delegates to the user's reporter; stops a first epoch that overruns the hard limit, and
    records the wall time after every epoch (so a resumed run keeps counting)."""

    def __init__(self, inner: Reporter, hard_limit: float | None, info_path: Path, previous_seconds: float, batch_size: int) -> None:
        self.inner, self.hard_limit, self.info_path = inner, hard_limit, info_path
        self.previous, self.batch_size = previous_seconds, batch_size
        self.started = time.perf_counter()
        self.epochs_done = 0
        self.batch = 0
        self.steps_per_epoch: int | None = None

    def elapsed(self) -> float:
        return self.previous + time.perf_counter() - self.started

    def start(self, epochs: int, steps_per_epoch: int, info: dict[str, Any]) -> None:
        self.train_started = time.perf_counter()
        self.steps_per_epoch = steps_per_epoch
        self.inner.start(epochs, steps_per_epoch, info)

    def step(self, epoch: int, loss: float) -> None:
        self.batch += 1
        self.inner.step(epoch, loss)
        seconds = time.perf_counter() - getattr(self, "train_started", self.started)
        if self.hard_limit is not None and self.epochs_done == 0 and seconds > self.hard_limit:
            per_epoch = f" of {self.steps_per_epoch}" if self.steps_per_epoch else ""
            eta = f"; one epoch would take about {seconds * self.steps_per_epoch / self.batch / 60:.0f} min" if self.steps_per_epoch else ""
            raise RunStopped(
                f"too slow: stopped after {seconds:.0f} s of training, {self.batch}{per_epoch} batches into its first epoch"
                f"{eta} (limit {HARD_LIMIT_FACTOR:g} × time budget + {HARD_LIMIT_GRACE:.0f} s)",
                seconds, self.batch * self.batch_size,
            )

    def epoch_end(self, record: dict[str, Any]) -> None:
        self.epochs_done += 1
        write_json(self.info_path, {"wall_seconds": self.elapsed(), "complete": False})
        self.inner.epoch_end(record)

    def finish(self, summary: dict[str, Any]) -> None:
        self.inner.finish(summary)

    def stage_start(self, description: str, total: int | None) -> None:
        self.inner.stage_start(description, total)

    def stage_advance(self, n: int) -> None:
        self.inner.stage_advance(n)

    def stage_end(self) -> None:
        self.inner.stage_end()


# ----------------------------------------------------------------------------------------------
# Running and scoring


def _hard_limit(settings: TrainSettings) -> float | None:
    if settings.time_budget is None:
        return None
    return settings.time_budget * HARD_LIMIT_FACTOR + HARD_LIMIT_GRACE


def _train_one(plan: Plan, settings: TrainSettings, reporter: Reporter) -> None:
    """Train (or resume) one run; exceptions propagate to the caller, which records them."""
    from instacli.training import train

    run = settings.out
    assert run is not None
    info = _read_json(run / RUN_INFO) or {}
    previous = float(info.get("wall_seconds", 0.0)) if settings.resume else 0.0
    guard = _Guard(reporter, _hard_limit(settings), run / RUN_INFO, previous, settings.batch_size * settings.grad_accum)
    run.mkdir(parents=True, exist_ok=True)
    if not settings.resume:  # a retrain starts from a run folder holding nothing but the run's files
        (run / RUN_INFO).unlink(missing_ok=True)
        (run / ERROR_FILE).unlink(missing_ok=True)
    train(settings, guard)
    write_json(run / RUN_INFO, {"wall_seconds": guard.elapsed(), "complete": True, "instacli_version": __version__})


def _evaluation(run: Path, data: Path, split: str) -> dict[str, Any]:
    """``evaluate`` on ``split``, or its saved metrics.json for that data and split when that is current."""
    from instacli.evaluation import evaluate

    saved = eval_folder(run, data, split) / METRICS
    weights = run / WEIGHTS
    cached = _read_json(saved) if saved.is_file() else None
    if (
        cached
        and cached.get("split") == split
        and cached.get("data") is not None
        and Path(cached["data"]).resolve() == Path(data).resolve()
        and saved.stat().st_mtime >= weights.stat().st_mtime
    ):
        return cached
    result = evaluate(run, data, split=split)
    result.pop("outputs", None)
    return result


def timing(run: Path, history: list[dict[str, Any]], n_train: int | None) -> dict[str, Any]:
    """Wall-clock training time (decoding, embedding and validation included) when compare trained
    the run, else the sum of epoch times; images/s = training images processed per second of it
    (without ``n_train``: the epochs' own images/s, weighted by their duration)."""
    info = _read_json(run / RUN_INFO) or {}
    epochs = len(history)
    epoch_seconds = float(sum(r.get("seconds", 0.0) for r in history))
    if info.get("complete") and info.get("wall_seconds"):
        seconds, how = float(info["wall_seconds"]), "wall"
    else:
        seconds, how = epoch_seconds, "epochs"
    if history and history[-1].get("images_seen"):  # counted by the trainer (drop_last, every process)
        images = float(history[-1]["images_seen"])
    elif n_train:
        images = float(n_train * epochs)
    else:
        images = float(sum(r.get("images_per_second", 0.0) * r.get("seconds", 0.0) for r in history))
    return {
        "train_seconds": seconds or None,
        "train_time_measured": how,
        "images_per_second": images / seconds if seconds and images else None,
        "epochs_run": epochs,
        "best_epoch": min(history, key=lambda r: r["val_loss"])["epoch"] if history else None,
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


def score_run(plan: Plan, run: Path, data: Path, split: str, root: Path, n_train: int) -> dict[str, Any]:
    """The results entry of one finished run: metrics, parameters, timing, history, settings."""
    history = read_history(run)
    evaluation = _evaluation(run, data, split)
    total, trainable = count_parameters(run)
    config = _read_json(run / CONFIG) or {}
    return {
        "name": plan.name, "group": plan.group, "label": plan.label, "kind": plan.kind,
        "encoder": plan.encoder, "regressor": plan.regressor, "seed": plan.seed,
        "status": "ok", "error": None, "run": _relative(run, root),
        "metrics": {k: v for k, v in evaluation.items() if k not in ("data", "run", "split")},
        "parameters": total, "trainable_parameters": trainable,
        **timing(run, history, n_train),
        "history": history,
        "settings": _read_json(run / SETTINGS),
        "encoder_options": config.get("encoder_options"),
        "figures": {k: _relative(path, root) for k, path in figures(eval_folder(run, data, split)).items()},
    }


def _failed_entry(plan: Plan, run: Path | None, root: Path, error: str, status: str = "failed") -> dict[str, Any]:
    return {
        "name": plan.name, "group": plan.group, "label": plan.label, "kind": plan.kind,
        "encoder": plan.encoder, "regressor": plan.regressor, "seed": plan.seed,
        "status": status, "error": error, "run": _relative(run, root) if run else None,
        "metrics": {}, "history": read_history(run) if run else [], "settings": plan.settings,
    }


STOPPED_KEYS = ("error", "train_seconds", "images_per_second", "parameters", "train_time_measured")


def _stopped_before(run: Path, wanted: dict[str, Any] | None) -> dict[str, Any] | None:
    """The recorded outcome of a run stopped as too slow with these same settings, if any."""
    info = _read_json(run / RUN_INFO) or {}
    saved = _read_json(run / SETTINGS)
    if not info.get("stopped") or saved is None or wanted is None or settings_difference(saved, wanted):
        return None
    return info["stopped"]


TRAINING = ("train", "retrain", "resume")


def _decide(plan: Plan, run: Path, wanted: dict[str, Any] | None, overwrite: bool) -> tuple[str, dict[str, Any] | None]:
    """(action, recorded stopped outcome): evaluate an external run; reuse a finished run (or a
    too-slow outcome) with the same settings; resume a checkpoint; retrain anything else."""
    state = run_state(run)
    if plan.kind == "external":
        return ("evaluate" if state == "finished" else "skip"), None
    differs = bool(wanted is not None and settings_difference(_read_json(run / SETTINGS) or {}, wanted))
    if state == "finished" and not (overwrite and differs):
        return "reuse", None
    if state == "resumable" and not (overwrite and differs):
        return "resume", None
    if state == "partial":
        stopped = _stopped_before(run, wanted)
        if stopped:
            return "reuse", stopped
    return ("retrain" if state != "absent" else "train"), None


def _encoder_parameters(plan: Plan) -> int | None:
    """Parameters of the encoder of ``plan`` (random weights; the heads are small beside it)."""
    from instacli.model import parameter_count

    try:
        options = dict(plan.settings.get("encoder_options") or {})
        for key in ("image_size", "pretrained"):
            if plan.settings.get(key) is not None:
                options[key] = plan.settings[key]
        options["pretrained"] = None if "pretrained" in registry.encoders.get(plan.encoder).options() else options.get("pretrained")
        options = {k: v for k, v in options.items() if v is not None}
        encoder = registry.encoders.create(plan.encoder, **registry.encoders.resolve_options(plan.encoder, plan.settings.get("preset"), **options))
        return parameter_count(encoder)
    except Exception:  # noqa: BLE001 — only decoration for the table
        return None


def aggregate(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per group: mean ± std of every metric over its successful seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault(e["group"], []).append(e)
    rows = []
    for group, members in groups.items():
        ok = [m for m in members if m["status"] == "ok"]
        first = members[0]
        row: dict[str, Any] = {
            "key": group, "name": first["label"], "kind": first["kind"],
            "encoder": first.get("encoder"), "regressor": first.get("regressor"),
            "runs": [m["name"] for m in members], "seeds": [m.get("seed") for m in members],
            "n_ok": len(ok), "n_runs": len(members),
            "status": "ok" if len(ok) == len(members) else ("partial" if ok else
                      ("stopped" if all(m["status"] == "stopped" for m in members) else "failed")),
            "error": next((m["error"] for m in members if m.get("error")), None),
            "metrics": {}, "std": {},
        }
        for key in (*SCALAR_METRICS, "likes_mae_class_median"):
            values = [m["metrics"].get(key) for m in ok]
            values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
            row["metrics"][key] = float(np.mean(values)) if values else None
            row["std"][key] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        if ok:
            row["metrics"]["confusion_matrix"] = ok[0]["metrics"].get("confusion_matrix")
            row["metrics"]["per_class"] = ok[0]["metrics"].get("per_class")
            for key in ("parameters", "trainable_parameters", "train_seconds", "images_per_second", "epochs_run"):
                values = [m.get(key) for m in ok if m.get(key) is not None]
                row[key] = float(np.mean(values)) if values else None
                if key in ("train_seconds", "images_per_second") and len(values) > 1:
                    row["std"][key] = float(np.std(values, ddof=1))
            row["figures"] = ok[0].get("figures", {})
        elif row["status"] == "stopped":  # what was measured before it was stopped
            for key in ("parameters", "train_seconds", "images_per_second"):
                values = [m.get(key) for m in members if m.get(key) is not None]
                row[key] = float(np.mean(values)) if values else None
        rows.append(row)
    return rows


@dataclass
class CompareResult:
    out: Path
    results: dict[str, Any]
    trained: list[str]
    reused: list[str]
    failed: list[str]


def compare(
    data: Path | str,
    out: Path | str,
    encoders: Sequence[str] = DEFAULT_ENCODERS,
    regressors: Sequence[str] = DEFAULT_REGRESSORS,
    *,
    epochs: int | None = None,
    time_budget: float | str | None = None,
    seeds: int = 1,
    include_seed_preset: bool = False,
    runs: Sequence[Path | str] = (),
    overrides: dict[str, dict[str, Any]] | None = None,
    base: dict[str, Any] | None = None,
    split: str = "test",
    overwrite: bool = False,
    baselines: bool = True,
    reporter: CompareReporter | None = None,
) -> CompareResult:
    """Train (or reuse) every combination, evaluate all on ``split``, write ``results.json`` and the report.

    ``base`` holds ``TrainSettings`` keyword arguments applied to every trained run (e.g. a batch
    size); ``overrides`` maps a model name (an encoder, or ``seed-512``) to its own settings, as
    :func:`parse_overrides` returns them.
    """
    from instacli_datasets import load_data

    reporter = reporter or CompareReporter()
    data, out = Path(data).resolve(), Path(out)
    train_ds, info = load_data(data, split="train")
    test_ds, _ = load_data(data, split=split)
    n_train = len(train_ds)
    budget: dict[str, Any] = {}
    if epochs is not None:
        budget["epochs"] = int(epochs)
    seconds = parse_duration(time_budget)
    if seconds is not None:
        budget["time_budget"] = seconds
    seed_list = seed_values(seeds)
    plans = plan_runs(list(dict.fromkeys(encoders)), list(dict.fromkeys(regressors)), seed_list, budget, base, overrides,
                      include_seed_preset)
    for path in runs:
        path = Path(path)
        config = _read_json(path / CONFIG) or {}
        encoder, regressor = config.get("encoder", "?"), config.get("regressor", "?")
        settings = _read_json(path / SETTINGS) or {}
        group = f"external:{path.resolve()}"
        plans.append(Plan(path.name, group, f"{encoder} + {regressor} ({path.name})", "external",
                          encoder, regressor, settings.get("seed"), settings, path=path))

    # Check every run's settings, names and options, and its existing folder, before training anything.
    wanted: dict[str, dict[str, Any]] = {}
    for plan in plans:
        if plan.kind == "external":
            continue
        try:
            settings = TrainSettings(data=data, encoder=plan.encoder, regressor=plan.regressor, seed=plan.seed, **plan.settings)
        except ValidationError as exc:  # a bad --set value: fail the whole command early
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InstacliError(f"settings of {plan.label}: {where}: {first['msg']}; fix the --set value") from None
        check_components(settings)
        wanted[plan.name] = apply_recipe(settings).model_dump(mode="json")  # as train records them
        run = out / "runs" / plan.name
        if run_state(run) in ("finished", "resumable") and not overwrite:
            saved = _read_json(run / SETTINGS) or {}
            diff = settings_difference(saved, wanted[plan.name])
            if diff:
                raise InstacliError(
                    f"{run} was trained with other settings ({'; '.join(diff[:3])}); pass --overwrite to retrain it, "
                    "or choose another --out"
                )
    reporter.plan(plans)

    header = {
        "instacli_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": str(data),
        "data_fingerprint": info.fingerprint,
        "engagement": info.engagement,
        "class_names": list(info.class_names),
        "split": split,
        "n_train": n_train,
        "n_test": len(test_ds),
        "budget": {"epochs": budget.get("epochs"), "time_budget": budget.get("time_budget")},
        "seeds": seed_list,
        "encoders": list(encoders),
        "regressors": list(regressors),
        "include_seed_preset": include_seed_preset,
        "encoder_defaults": {e: ENCODER_DEFAULTS.get(e, {}) for e in encoders},
        "overrides": overrides or {},
    }
    entries: list[dict[str, Any]] = []
    baseline_rows: list[dict[str, Any]] = []
    trained: list[str] = []
    reused: list[str] = []
    failed: list[str] = []
    results: dict[str, Any] = {}

    def save() -> None:
        nonlocal results
        results = {**header, "rows": [*aggregate(entries), *baseline_rows], "runs": entries}
        write_json(out / "results.json", results)

    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):  # a second compare into the same --out fails here instead of training the same runs
        if baselines:
            reporter.stage("baselines")
            from instacli.baselines import all_baselines

            baseline_rows = all_baselines(data, split=split, seed=seed_list[0])

        for index, plan in enumerate(plans, 1):
            run = plan.path if plan.kind == "external" else out / "runs" / plan.name
            assert run is not None
            action, stopped = _decide(plan, run, wanted.get(plan.name), overwrite)
            train_reporter = reporter.run_start(plan, index, len(plans), action)
            try:
                if stopped:  # stopped as too slow before, with these same settings
                    entry = {**_failed_entry(plan, run, out, stopped["error"], status="stopped"), **stopped}
                else:
                    if plan.kind == "external" and action != "evaluate":
                        raise InstacliError(f"{run}: not a finished run (needs model.safetensors and config.json, no checkpoint/)")
                    if action in TRAINING:
                        settings = TrainSettings(
                            data=data, out=run, encoder=plan.encoder, regressor=plan.regressor, seed=plan.seed, **plan.settings,
                            overwrite=action == "retrain", resume=action == "resume",
                        )
                        _train_one(plan, settings, train_reporter)
                    entry = score_run(plan, run, data, split, out, n_train)
            except KeyboardInterrupt:
                raise
            except RunStopped as exc:
                entry = _failed_entry(plan, run, out, str(exc), status="stopped")
                entry.update(train_seconds=exc.seconds, images_per_second=exc.images / exc.seconds if exc.seconds else None,
                             parameters=_encoder_parameters(plan), train_time_measured="until stopped")
                # remembered, so that resuming the comparison does not pay for the same failure again
                write_json(run / RUN_INFO, {"stopped": {k: entry[k] for k in STOPPED_KEYS}, "complete": False})
            except InstacliError as exc:
                entry = _failed_entry(plan, run if run.exists() else None, out, str(exc))
            except Exception as exc:  # noqa: BLE001 — a plugin bug must not take the other runs down
                message = f"{type(exc).__name__}: {exc}".splitlines()[0]
                if run.exists() and plan.kind != "external":
                    (run / ERROR_FILE).write_text(traceback.format_exc())
                    message += f" (traceback in {_relative(run / ERROR_FILE, out)})"
                entry = _failed_entry(plan, run if run.exists() else None, out, message)
            entry["action"] = action
            if entry["status"] != "ok":
                failed.append(plan.name)
            elif action in TRAINING:
                trained.append(plan.name)
            else:
                reused.append(plan.name)
            entries.append(entry)
            save()
            reporter.run_end(plan, entry)

        save()
        from instacli.report import render_report

        reporter.stage("report")
        render_report(results, out)
    return CompareResult(out=out, results=results, trained=trained, reused=reused, failed=failed)

