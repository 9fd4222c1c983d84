"""Hyperparameter search over the training settings with Optuna: ``instacli tune``.

Each trial is an ordinary :func:`instacli.training.train` run in ``OUT/trials/trial-NNN`` with
some settings drawn from :data:`SEARCH_SPACE` (TPE sampler); the others are the study's base
settings. After each epoch the trial reports the study's metric to a median pruner, which stops a
trial doing worse than the earlier trials at the same epoch. The study lives in ``OUT/study.db``
(SQLite), so that ``--resume`` continues it after an interruption: a trial the interruption cut
short is tried again with the same settings. ``OUT/best`` is a copy of the best finished run (a
normal run folder for ``predict``/``evaluate``), ``OUT/results.json`` and ``OUT/trials.csv`` list
every trial, and ``OUT/history.png`` draws the optimization history.

Optuna is an optional extra (``pip install "instacli[tune]"``), imported only here, when a study runs.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from instacli.errors import InstacliError, invalid_file
from instacli.io import atomic_dir, atomic_file, output_lock, write_json
from instacli.progress import Forwarding, Reporter
from instacli.registry import Count, PositiveFloat
from instacli.settings import TrainSettings, apply_recipe, check_components

if TYPE_CHECKING:
    import optuna

STUDY_FILE = "study.db"
SETTINGS_FILE = "tune.json"
RESULTS = "results.json"
TABLE = "trials.csv"
HISTORY_PLOT = "history.png"
TRIALS = "trials"
BEST = "best"
STUDY_NAME = "instacli-tune"
#: Finished trials before the pruner may stop one: with fewer, the median of earlier epochs is one run's luck.
PRUNER_STARTUP_TRIALS = 2


def pruning_starts(settings: TrainSettings) -> int:
    """The first epoch at which a trial may be pruned: the one after the learning-rate warm-up.

    During warm-up the loss says more about the schedule than about the settings: in a 12-trial study
    of efficientnet-lite0 on posts-dev (README), the trials with a lower ``lr`` were 0.3-0.5 worse
    after epoch 1, and the one that ended best was among them."""
    return math.ceil(settings.warmup_epochs) + 1


Metric = Literal["loss", "accuracy", "likes"]
#: What a trial is judged by, read from the validation record of the epoch whose weights the run kept.
#: ``loss`` is the cross-entropy plus the likes loss *unweighted*: the run's own ``val_loss`` weighs the
#: likes by the ``likes_weight`` being searched, and a trial would win by shrinking that weight.
METRICS: dict[str, tuple[str, str]] = {
    "loss": ("minimize", "validation cross-entropy + likes loss"),
    "accuracy": ("maximize", "validation accuracy"),
    "likes": ("minimize", "validation likes loss"),
}


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a range (log-scaled for rates and weights, whose useful values span decades)
    and when it applies: ``always``, ``trained`` (the encoder is trained, not frozen: its learning rate
    and augmentation matter) or ``both`` (the data has categories and likes: their balance matters)."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False
    when: Literal["always", "trained", "both"] = "always"


#: The one definition of what ``tune`` searches (the README's table is this). ``augment`` is the
#: magnitude of timm's RandAugment (0 = none; the ``randaugment`` recipe is 9), ``epochs`` is drawn
#: between a third of the base ``--epochs`` and all of them; label smoothing is left out on purpose,
#: as the validation cross-entropy is measured with the run's own smoothing and would rank it by itself.
SEARCH_SPACE: tuple[Dimension, ...] = (
    Dimension("lr", 3e-4, 1e-2, log=True),
    Dimension("encoder_lr", 1e-5, 1e-3, log=True, when="trained"),
    Dimension("weight_decay", 1e-3, 0.3, log=True),
    Dimension("likes_weight", 0.25, 4.0, log=True, when="both"),
    Dimension("augment", 0, 9, integer=True, when="trained"),
    Dimension("random_erasing", 0.0, 0.5, when="trained"),
    Dimension("epochs", 0, 0, integer=True),  # bounds from the base settings: see search_space()
)


def augment_policy(magnitude: int) -> str:
    """The ``auto_augment`` setting of a RandAugment magnitude (0: none); capped at 9 like the
    ``randaugment`` recipe (:data:`instacli.augment.AUTO_AUGMENT`)."""
    return "none" if magnitude <= 0 else f"rand-m{magnitude}-mstd0.5-inc1-mmax9"


class TuneSettings(BaseModel):
    """A study: the base training settings every trial starts from, how many trials, for how long, judged how."""

    model_config = ConfigDict(extra="forbid")

    train: TrainSettings
    out: Path
    #: Finished (complete or pruned) trials the study should hold; a resumed study runs the missing ones.
    trials: Count = 20
    #: Seconds for this invocation: no trial starts after it, and the running one stops at its next epoch end.
    time_budget: PositiveFloat | None = None
    metric: Metric = "loss"


@dataclass
class TuneResult:
    """What a study holds after this invocation."""

    out: Path
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    stopped_by_time: bool


def _optuna() -> Any:
    """The optuna module, or a one-line error naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise InstacliError('instacli tune needs Optuna, an optional extra: pip install "instacli[tune]" (from a checkout: pip install -e ".[tune]")') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the library prints nothing; the CLI shows the trials
    return optuna


def data_task(settings: TrainSettings) -> str:
    """The task the runs will train (``auto`` resolved from the dataset's record, without reading its rows)."""
    from instacli.split_arrays import resolve_task
    from instacli_datasets.load import read_info

    info = read_info(settings.data)
    return resolve_task(settings.task, bool(info.class_names), info.engagement is not None, settings.data)


def search_space(settings: TrainSettings, task: str) -> list[Dimension]:
    """The dimensions of :data:`SEARCH_SPACE` that matter for these base settings and this task."""
    trained = not apply_recipe(settings).freeze_encoder
    applies = {"always": True, "trained": trained, "both": task == "both"}
    space = []
    for dim in SEARCH_SPACE:
        if dim.name == "epochs":
            dim = Dimension("epochs", max(1, math.ceil(settings.epochs / 3)), settings.epochs, integer=True)
        if applies[dim.when]:
            space.append(dim)
    return space


def suggest(trial: optuna.Trial, space: list[Dimension]) -> dict[str, Any]:
    """The trial's values of ``space`` as :class:`TrainSettings` fields."""
    values: dict[str, Any] = {}
    for dim in space:
        if dim.integer:
            values[dim.name] = trial.suggest_int(dim.name, int(dim.low), int(dim.high), log=dim.log)
        else:
            values[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)
    if "augment" in values:
        values["auto_augment"] = augment_policy(values.pop("augment"))
    return values


def check_metric(metric: str, task: str, data: Path) -> None:
    """Refuse, before the study starts, a metric that the runs' task does not measure."""
    lacking = {"accuracy": ("likes", "categories"), "likes": ("category", "likes")}.get(metric)
    if lacking and task == lacking[0]:
        raise InstacliError(f"--metric {metric}: the runs on {data} have no {lacking[1]} to measure it (task {task}); use --metric loss")


def metric_value(record: dict[str, Any], metric: str) -> float:
    """The study's ``metric`` from one validation record of a run."""
    if metric == "loss":
        return float(record["val_ce"] + record["val_likes_loss"])
    return float(record["val_accuracy" if metric == "accuracy" else "val_likes_loss"])


class TuneReporter:
    """Hooks the CLI implements to show a study's progress; the library prints nothing."""

    def trial_start(self, number: int, params: dict[str, Any]) -> Reporter:
        """Trial ``number`` starts training with ``params`` drawn; returns the reporter of its run."""
        return Reporter()

    def trial_end(self, trial: dict[str, Any]) -> None:
        """A trial finished (complete, pruned or failed): its row of the results."""


class _Pruning(Forwarding):
    """Passes the hooks on to the trial's reporter; feeds each epoch's metric to the trial and stops the
    run when the pruner gives up on it (the exception leaves the run folder as an interrupted run:
    metrics so far, best weights, checkpoint)."""

    def __init__(self, trial: optuna.Trial, metric: str, inner: Reporter) -> None:
        super().__init__(inner)
        self.trial, self.metric = trial, metric

    def epoch_end(self, record: dict[str, Any]) -> None:
        super().epoch_end(record)
        if record["epoch"] == 0:  # fitted directly, no epochs: nothing to prune
            return
        self.trial.report(metric_value(record, self.metric), record["epoch"])
        if self.trial.should_prune():
            raise _optuna().TrialPruned(f"pruned after epoch {record['epoch']}")


def check_out(settings: TuneSettings, resume: bool) -> None:
    """A new study needs a new (or empty) folder; ``--resume`` needs one that holds a study."""
    out = settings.out
    if resume:
        if not (out / STUDY_FILE).is_file() or not (out / SETTINGS_FILE).is_file():
            raise InstacliError(f"--out {out}: holds no study ({STUDY_FILE}, {SETTINGS_FILE}) to resume; start one without --resume")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InstacliError(f"--out {out}: already exists; pass --resume to continue its study or choose a new folder")


def load_tune_settings(out: Path) -> TuneSettings:
    """The settings a study was started with (``OUT/tune.json``), for ``--resume``."""
    path = Path(out) / SETTINGS_FILE
    if not path.is_file():
        raise InstacliError(f"--out {out}: holds no study ({SETTINGS_FILE}) to resume; start one without --resume")
    try:
        saved = json.loads(path.read_text())
        return TuneSettings(train=TrainSettings(**saved.pop("train")), **saved)
    except ValidationError as exc:
        raise invalid_file(path, exc, "the study folder is damaged: start a new study") from None
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise InstacliError(f"{path}: not a study's settings ({exc}); the study folder is damaged: start a new study") from None


def tune(settings: TuneSettings, resume: bool = False, reporter: TuneReporter | None = None) -> TuneResult:
    """Run (or with ``resume`` continue) the study ``settings`` describes until it holds ``trials``
    finished trials or ``time_budget`` runs out; ``reporter`` hears of each trial."""
    optuna = _optuna()
    reporter = reporter or TuneReporter()
    TrialState = optuna.trial.TrialState
    check_out(settings, resume)
    base = settings.train
    check_components(base)  # an unknown encoder fails here, not in the first trial
    task = data_task(base)
    check_metric(settings.metric, task, base.data)
    space = search_space(base, task)
    out = settings.out
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_json(out / SETTINGS_FILE, settings.model_dump(mode="json", exclude={"time_budget"}))
        direction = METRICS[settings.metric][0]
        study = optuna.create_study(
            storage=f"sqlite:///{(out / STUDY_FILE).absolute()}", study_name=STUDY_NAME, load_if_exists=resume, direction=direction,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=pruning_starts(base)),
        )
        # a new seed for each invocation: a resumed study must not draw the first invocation's settings again
        study.sampler = optuna.samplers.TPESampler(seed=base.seed + len(study.trials))
        if resume:
            _retry_interrupted(study)
        else:  # the first trial trains the base settings: the study never ends worse than a plain `train`
            study.enqueue_trial(_base_values(base, space))
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        deadline = time.monotonic() + settings.time_budget if settings.time_budget else None

        def objective(trial: optuna.Trial) -> float:
            run = out / TRIALS / f"trial-{trial.number:03d}"
            trial.set_user_attr("run", str(run.relative_to(out)))
            left = None if deadline is None else deadline - time.monotonic()
            budgets = [b for b in (base.time_budget, left) if b is not None]
            values = suggest(trial, space)
            run_settings = base.model_copy(update={
                **values, "out": run, "overwrite": False, "resume": False, "time_budget": max(min(budgets), 1e-3) if budgets else None,
            })
            from instacli.training import TrainingDiverged, train

            try:
                result = train(run_settings, _Pruning(trial, settings.metric, reporter.trial_start(trial.number, trial.params)))
            except TrainingDiverged:  # settings that blow up (a learning rate too high) are a hopeless trial, not the study's end
                raise optuna.TrialPruned() from None
            trial.set_user_attr("epochs_run", result.epochs_run)
            trial.set_user_attr("best_epoch", result.best_epoch)
            return metric_value(result.best, settings.metric)

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            summary = _trial_summary(trial)
            if summary["state"] == "COMPLETE" and study.best_trial.number == trial.number:
                _copy_best(out / summary["run"], out / BEST)
            write_results(study, settings)
            reporter.trial_end(summary)

        started = time.monotonic()
        if settings.trials > finished:
            with warnings.catch_warnings():  # an enqueued value outside the space is the user's choice
                warnings.filterwarnings("ignore", message="Fixed parameter")
                study.optimize(objective, n_trials=settings.trials - finished, timeout=settings.time_budget, callbacks=[after_trial])
        stopped_by_time = settings.time_budget is not None and time.monotonic() - started >= settings.time_budget
        trials = write_results(study, settings)
        best = next((t for t in trials if t["best"]), None)
        return TuneResult(out=out, best=best, trials=trials, stopped_by_time=stopped_by_time)


def _base_values(base: TrainSettings, space: list[Dimension]) -> dict[str, Any]:
    """The base settings as values of ``space`` (what the first trial trains); a base policy that is
    not a RandAugment magnitude of the space counts as none."""
    from instacli.augment import AUTO_AUGMENT

    policy = AUTO_AUGMENT.get(base.auto_augment, base.auto_augment)
    values = {"augment": next((m for m in range(10) if augment_policy(m) == policy), 0), "encoder_lr": base.encoder_lr or base.lr}
    return {dim.name: values.get(dim.name, getattr(base, dim.name, None)) for dim in space}


def _retry_interrupted(study: optuna.Study) -> None:
    """Trials an interruption cut short go again, once, with the same settings, in a fresh run folder.
    A trial still RUNNING in the study was killed (this process holds the study's lock, so no other
    runs it): it is marked failed first. A retry that fails too is not tried a third time."""
    optuna = _optuna()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    for trial in trials:
        if trial.state.name == "FAIL" and trial.number not in retried and "retry_of" not in trial.user_attrs:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def _trial_summary(trial: optuna.trial.FrozenTrial, best: bool = False) -> dict[str, Any]:
    """One row of the results: number, state, value, settings, run folder, epochs and time; ``best``: the study's best trial."""
    duration = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete and trial.datetime_start else None
    return {
        "number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
        "run": trial.user_attrs.get("run"), "epochs_run": trial.user_attrs.get("epochs_run", trial.last_step),
        "best_epoch": trial.user_attrs.get("best_epoch"), "seconds": duration, "retry_of": trial.user_attrs.get("retry_of"),
        "best": best,
    }


def _copy_best(run: Path, best: Path) -> None:
    """``OUT/best``: a copy of the best run, replaced whole (never half-copied) when a better one finishes."""
    with atomic_dir(best, overwrite=True, what="best run") as tmp:
        shutil.copytree(run, tmp, dirs_exist_ok=True)


def write_results(study: optuna.Study, settings: TuneSettings) -> list[dict[str, Any]]:
    """``results.json`` (the best trial and every trial), ``trials.csv`` and ``history.png``; returns the trials' rows."""
    complete = any(t.state.name == "COMPLETE" for t in study.trials)
    best_number = study.best_trial.number if complete else None
    trials = [_trial_summary(t, t.number == best_number) for t in study.trials]
    best = trials[best_number] if best_number is not None else None
    direction, meaning = METRICS[settings.metric]
    write_json(settings.out / RESULTS, {
        "metric": settings.metric, "meaning": meaning, "direction": direction,
        "best": best and {**best, "folder": BEST}, "trials": trials,
    })
    names = list(dict.fromkeys(name for t in trials for name in t["params"]))
    with atomic_file(settings.out / TABLE) as handle:
        writer = csv.DictWriter(handle, ["number", "state", "value", "epochs_run", "best_epoch", "seconds", "run", "retry_of", *names])
        writer.writeheader()
        writer.writerows({**{k: v for k, v in t.items() if k not in ("params", "best")}, **t["params"]} for t in trials)
    if complete:
        _plot_history(study, settings.out / HISTORY_PLOT, meaning)
    return trials


def _plot_history(study: optuna.Study, path: Path, meaning: str) -> None:
    """Optuna's optimization-history figure (each trial's value and the best so far)."""
    optuna = _optuna()
    from instacli.plots import save_figure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=meaning)
    save_figure(axes.figure, path)
