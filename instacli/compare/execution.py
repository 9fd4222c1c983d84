"""Running a comparison: train (or reuse, resume, retrain) every planned run, stop one that is too
slow, evaluate each on the split, and write ``results.json`` after every run."""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instacli import __version__, registry
from instacli.compare.planning import (
    DEFAULT_ENCODERS, DEFAULT_REGRESSORS, ENCODER_DEFAULTS, TRAINING, Plan, check_plans, decide, external_plan, plan_runs, seed_values,
)
from instacli.errors import InstacliError
from instacli.io import output_lock, write_json
from instacli.progress import Forwarding, Reporter
from instacli.results import COMPARE_INFO, RESULTS, Results, RunEntry, aggregate, failed_entry, relative, run_entry, save_results
from instacli.run_folder import METRICS, WEIGHTS, RunFolder, read_json
from instacli.settings import TrainSettings, parse_duration

#: A run whose *first* epoch is still going after ``time_budget × factor + HARD_LIMIT_GRACE``
#: seconds is stopped and reported as too slow (the trainer checks its budget only between epochs).
HARD_LIMIT_FACTOR = 2.0
HARD_LIMIT_GRACE = 60.0
#: Traceback of a run that failed by a bug (not a user error), inside its run folder.
ERROR_FILE = "error.txt"
#: The folder of a comparison's trained runs, inside its --out.
RUNS = "runs"
#: What a stopped run's entry keeps in its folder, so that resuming the comparison does not pay for the same failure again.
STOPPED_KEYS = ("error", "train_seconds", "images_per_second", "parameters", "train_time_measured")


class CompareReporter:
    """Hooks the CLI implements; the library prints nothing."""

    def plan(self, plans: Sequence[Plan]) -> None: ...

    def run_start(self, plan: Plan, index: int, total: int, action: str) -> Reporter:
        """``action``: train, resume, retrain, reuse, evaluate. Returns the training reporter."""
        return Reporter()

    def run_end(self, plan: Plan, row: RunEntry) -> None: ...

    def stage(self, message: str) -> None: ...


class _Guard(Forwarding):
    """Passes every hook on to the user's reporter and records the wall time after every epoch (so a
    resumed run keeps counting); its :meth:`too_slow` is the ``should_stop`` of a run whose first epoch
    overruns the hard limit."""

    def __init__(self, inner: Reporter, hard_limit: float | None, info_path: Path, previous_seconds: float) -> None:
        super().__init__(inner)
        self.hard_limit, self.info_path, self.previous = hard_limit, info_path, previous_seconds
        self.started = self.train_started = time.perf_counter()
        self.epochs_done = self.batches = 0
        self.steps_per_epoch = 0

    def elapsed(self) -> float:
        return self.previous + time.perf_counter() - self.started

    def too_slow(self) -> bool:
        seconds = time.perf_counter() - self.train_started
        return self.hard_limit is not None and self.epochs_done == 0 and seconds > self.hard_limit

    def stopped_message(self) -> str:
        seconds = time.perf_counter() - self.train_started
        of = f" of {self.steps_per_epoch}" if self.steps_per_epoch else ""
        eta = f"; one epoch would take about {seconds * self.steps_per_epoch / max(self.batches, 1) / 60:.0f} min" if self.steps_per_epoch else ""
        return (f"too slow: stopped after {seconds:.0f} s of training, {self.batches}{of} batches into its first epoch"
                f"{eta} (limit {HARD_LIMIT_FACTOR:g} × time budget + {HARD_LIMIT_GRACE:.0f} s)")

    def start(self, epochs: int, steps_per_epoch: int, info: dict[str, Any]) -> None:
        self.train_started, self.steps_per_epoch = time.perf_counter(), steps_per_epoch
        super().start(epochs, steps_per_epoch, info)

    def step(self, epoch: int, loss: float) -> None:
        self.batches += 1
        super().step(epoch, loss)

    def epoch_end(self, record: dict[str, Any]) -> None:
        self.epochs_done += 1
        write_json(self.info_path, {"wall_seconds": self.elapsed(), "complete": False})
        super().epoch_end(record)


class RunStopped(Exception):
    """A run stopped as too slow, with what was measured until then (the table shows it)."""

    def __init__(self, message: str, seconds: float, images: int) -> None:
        super().__init__(message)
        self.seconds, self.images = seconds, images


def train_one(settings: TrainSettings, reporter: Reporter) -> None:
    """Train (or resume) one run, stopping its first epoch at the hard limit (:class:`RunStopped`);
    other exceptions propagate to the caller, which records them."""
    from instacli.training import TrainingStopped, train

    folder = RunFolder(settings.out)  # type: ignore[arg-type]
    info = read_json(folder / COMPARE_INFO) or {}
    previous = float(info.get("wall_seconds", 0.0)) if settings.resume else 0.0
    hard_limit = None if settings.time_budget is None else settings.time_budget * HARD_LIMIT_FACTOR + HARD_LIMIT_GRACE
    guard = _Guard(reporter, hard_limit, folder / COMPARE_INFO, previous)
    folder.path.mkdir(parents=True, exist_ok=True)
    if not settings.resume:  # a retrain starts from a run folder holding nothing but the run's files
        (folder / COMPARE_INFO).unlink(missing_ok=True)
        (folder / ERROR_FILE).unlink(missing_ok=True)
    try:
        train(settings, guard, should_stop=guard.too_slow)
    except TrainingStopped as exc:
        raise RunStopped(guard.stopped_message(), exc.seconds, exc.images_seen) from None
    write_json(folder / COMPARE_INFO, {"wall_seconds": guard.elapsed(), "complete": True, "instacli_version": __version__})


def evaluation(folder: RunFolder, data: Path, split: str) -> tuple[dict[str, Any], Path]:
    """``evaluate`` on ``split`` (or its saved metrics.json for that data and split when newer than
    the weights), and the evaluation's folder."""
    from instacli.evaluation import evaluate

    evaluated = folder.evaluation(data, split)
    cached = read_json(evaluated / METRICS)
    if (
        cached
        and cached.get("split") == split
        and cached.get("data") is not None
        and Path(cached["data"]).resolve() == Path(data).resolve()
        and (evaluated / METRICS).stat().st_mtime >= (folder / WEIGHTS).stat().st_mtime
    ):
        return cached, evaluated
    return evaluate(folder.path, data, split=split), evaluated


def encoder_parameters(plan: Plan) -> int | None:
    """Parameters of the encoder of ``plan`` (random weights; the heads are small beside it), for a run stopped before it saved any."""
    from instacli.model import parameter_count
    from instacli.settings import encoder_options

    try:
        options = encoder_options(TrainSettings(data=Path("."), encoder=plan.encoder, regressor=plan.regressor, **plan.settings))
        if "pretrained" in registry.encoders.get(plan.encoder).options():
            options["pretrained"] = None  # random weights: no download for a count
        return parameter_count(registry.encoders.create(plan.encoder, **options))
    except Exception:  # noqa: BLE001 — only decoration for the table
        return None


def run_plan(plan: Plan, folder: RunFolder, action: str, stopped: dict[str, Any] | None, data: Path, split: str,
             out: Path, n_train: int, reporter: Reporter) -> RunEntry:
    """Carry out ``action`` for one plan and return its entry; a failure becomes a failed entry, not an exception."""
    try:
        if stopped:  # stopped as too slow before, with these same settings
            return {**failed_entry(plan, folder, out, stopped["error"], plan.settings, status="stopped"), **stopped}  # type: ignore[typeddict-item]
        if plan.kind == "external" and action != "evaluate":
            raise InstacliError(f"{folder.path}: not a finished run (needs model.safetensors and config.json, no checkpoint/)")
        if action in TRAINING:
            train_one(TrainSettings(data=data, out=folder.path, encoder=plan.encoder, regressor=plan.regressor, seed=plan.seed,
                                    **plan.settings, overwrite=action == "retrain", resume=action == "resume"), reporter)
        metrics, evaluated = evaluation(folder, data, split)
        return run_entry(plan, folder, metrics, evaluated, out, n_train)
    except KeyboardInterrupt:
        raise
    except RunStopped as exc:
        entry = failed_entry(plan, folder, out, str(exc), plan.settings, status="stopped")
        entry.update(train_seconds=exc.seconds, images_per_second=exc.images / exc.seconds if exc.seconds else None,
                     parameters=encoder_parameters(plan), train_time_measured="until stopped")
        write_json(folder / COMPARE_INFO, {"stopped": {k: entry.get(k) for k in STOPPED_KEYS}, "complete": False})
        return entry
    except InstacliError as exc:
        return failed_entry(plan, folder if folder.path.exists() else None, out, str(exc), plan.settings)
    except Exception as exc:  # noqa: BLE001 — a plugin bug must not take the other runs down
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if folder.path.exists() and plan.kind != "external":
            (folder / ERROR_FILE).write_text(traceback.format_exc())
            message += f" (traceback in {relative(folder / ERROR_FILE, out)})"
        return failed_entry(plan, folder if folder.path.exists() else None, out, message, plan.settings)


@dataclass
class CompareResult:
    out: Path
    results: Results
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
    """Train (or reuse) every combination, evaluate all on ``split`` and write ``results.json``
    (:func:`instacli.report.render_report` draws it: the CLI calls both).

    ``base`` holds ``TrainSettings`` keyword arguments applied to every trained run (e.g. a batch
    size); ``overrides`` maps a model name (an encoder, or ``seed-512``) to its own settings, as
    :func:`instacli.compare.planning.parse_overrides` returns them.
    """
    from instacli_datasets import load_data

    reporter = reporter or CompareReporter()
    data, out = Path(data).resolve(), Path(out)
    if out.is_dir() and not (out / RESULTS).is_file() and not (out / RUNS).is_dir() and any(out.iterdir()):
        # its report.md and results.json were replaced without a word (--out . in a project folder)
        raise InstacliError(f"--out {out}: exists and is not an instacli comparison folder (no {RESULTS} or {RUNS}/); "
                            "refusing to write into it, choose another path")
    train_ds, info = load_data(data, split="train")
    test_ds, _ = load_data(data, split=split)
    budget: dict[str, Any] = {} if epochs is None else {"epochs": int(epochs)}
    seconds = parse_duration(time_budget)
    if seconds is not None:
        budget["time_budget"] = seconds
    seed_list = seed_values(seeds)
    plans = plan_runs(list(dict.fromkeys(encoders)), list(dict.fromkeys(regressors)), seed_list, budget, base, overrides,
                      include_seed_preset) + [external_plan(Path(path)) for path in runs]
    wanted = check_plans(plans, data, out / RUNS, overwrite)
    reporter.plan(plans)
    results: Results = {
        "instacli_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "data": str(data),
        "data_fingerprint": info.fingerprint, "engagement": info.engagement, "class_names": list(info.class_names),
        "split": split, "n_train": len(train_ds), "n_test": len(test_ds),
        "budget": {"epochs": budget.get("epochs"), "time_budget": budget.get("time_budget")}, "seeds": seed_list,
        "encoders": list(encoders), "regressors": list(regressors), "include_seed_preset": include_seed_preset,
        "encoder_defaults": {e: ENCODER_DEFAULTS.get(e, {}) for e in encoders}, "overrides": overrides or {},
        "rows": [], "runs": [],
    }  # type: ignore[typeddict-unknown-key]
    outcome = CompareResult(out, results, [], [], [])
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):  # a second compare into the same --out fails here instead of training the same runs
        baseline_rows: list[Any] = []
        if baselines:
            reporter.stage("baselines")
            from instacli.baselines import all_baselines

            baseline_rows = all_baselines(data, split=split, seed=seed_list[0])
        for index, plan in enumerate(plans, 1):
            folder = RunFolder(plan.path if plan.kind == "external" else out / RUNS / plan.name)  # type: ignore[arg-type]
            action, stopped = decide(plan, folder, wanted.get(plan.name), overwrite)
            train_reporter = reporter.run_start(plan, index, len(plans), action)
            entry = run_plan(plan, folder, action, stopped, data, split, out, len(train_ds), train_reporter)
            entry["action"] = action
            (outcome.failed if entry["status"] != "ok" else outcome.trained if action in TRAINING else outcome.reused).append(plan.name)
            results["runs"].append(entry)
            results["rows"] = [*aggregate(results["runs"]), *baseline_rows]
            save_results(out, results)
            reporter.run_end(plan, entry)
        results["rows"] = [*aggregate(results["runs"]), *baseline_rows]
        save_results(out, results)
    return outcome
