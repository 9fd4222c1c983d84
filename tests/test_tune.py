"""``instacli tune``: an Optuna study of tiny vit-scratch runs on 40 generated photos (about a second a trial).

What is checked: the trials run and the best one's settings are those of ``best/`` (a copy of its
run), a hopeless trial is pruned after its warm-up, the time budget ends a study, a killed
study resumes with the interrupted trial tried again, and bad flags are one-line errors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from instacli.run_folder import is_run
from instacli.settings import TrainSettings
from instacli.tune import BEST, RESULTS, STUDY_FILE, STUDY_NAME, TABLE, TuneSettings, augment_policy, pruning_starts, search_space, tune
from tests.conftest import two_colour_dataset

TINY_VIT = {"image_size": 32, "patch_size": 8, "width": 32, "heads": 2}
TINY_FLAGS = ["-E", "image_size=32", "-E", "patch_size=8", "-E", "width=32", "-E", "heads=2", "--batch-size", "8"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_colour_dataset(tmp_path_factory)


def _base(dataset: Path, **changes: object) -> TrainSettings:
    return TrainSettings(**{"data": dataset, "encoder_options": TINY_VIT, "epochs": 2, "batch_size": 8, "warmup_epochs": 0.5, **changes})


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / STUDY_FILE}")


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_study_keeps_the_best_run_and_prunes_a_hopeless_trial(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    settings = TuneSettings(train=_base(dataset), out=out, trials=2)
    first = tune(settings)
    assert [t["state"] for t in first.trials] == ["COMPLETE", "COMPLETE"]
    # the first trial trains the base settings
    assert first.trials[0]["params"] == {"lr": 2e-3, "encoder_lr": 2e-3, "weight_decay": 0.05, "likes_weight": 1.0, "augment": 0,
                                         "random_erasing": 0.0, "epochs": 2}
    # a third trial whose learning rate (1.0) wrecks the model: worse than the median of the two at epoch 2, pruned there,
    # not during its warm-up (epoch 1 of --warmup-epochs 0.5) and before its third epoch
    assert pruning_starts(settings.train) == 2 and pruning_starts(_base(dataset, warmup_epochs=3)) == 4
    _study(out).enqueue_trial({"lr": 1.0, "encoder_lr": 1.0, "epochs": 3})
    result = tune(settings.model_copy(update={"trials": 3}), resume=True)

    trials = result.trials
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = trials[2]
    assert pruned["params"]["lr"] == 1.0 and pruned["epochs_run"] == 2 and not pruned["best"]
    assert len(_records(out / pruned["run"])) == 2, "the pruned run stopped after its second epoch of three"

    best = min(trials[:2], key=lambda t: t["value"])
    assert result.best == best and best["best"]
    saved = json.loads((out / RESULTS).read_text())
    assert saved["best"]["number"] == best["number"] and saved["best"]["value"] == best["value"]
    assert [t["state"] for t in saved["trials"]] == ["COMPLETE", "COMPLETE", "PRUNED"]
    # best/ is a copy of the best trial's run, trained with the best trial's settings
    assert is_run(out / BEST) and _records(out / BEST) == _records(out / best["run"])
    trained = json.loads((out / BEST / "settings.json").read_text())
    params = best["params"]
    assert {k: trained[k] for k in ("lr", "encoder_lr", "weight_decay", "likes_weight", "random_erasing", "epochs")} == {
        k: params[k] for k in ("lr", "encoder_lr", "weight_decay", "likes_weight", "random_erasing", "epochs")}
    assert trained["auto_augment"] == augment_policy(params["augment"])
    kept = next(r for r in _records(out / BEST) if r["epoch"] == best["best_epoch"])
    assert best["value"] == pytest.approx(kept["val_ce"] + kept["val_likes_loss"]), "the objective: the kept epoch's unweighted loss"
    assert len((out / TABLE).read_text().splitlines()) == 1 + 3
    assert (out / "history.png").stat().st_size > 0


def test_a_trial_whose_training_diverges_is_pruned_and_the_study_goes_on(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A diverged trial (no finite validation loss, so no weights) ended the whole study with its error."""
    from instacli import training

    real_train, calls = training.train, []

    def first_diverges(settings: TrainSettings, reporter: object = None) -> object:
        calls.append(settings.out)
        if len(calls) == 1:
            raise training.TrainingDiverged(f"{settings.out}: training diverged")
        return real_train(settings, reporter)

    monkeypatch.setattr(training, "train", first_diverges)
    result = tune(TuneSettings(train=_base(dataset, epochs=1), out=tmp_path / "study", trials=2))
    assert [t["state"] for t in result.trials] == ["PRUNED", "COMPLETE"] and result.best == result.trials[1]


def test_time_budget_stops_the_study(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    started = time.perf_counter()
    result = tune(TuneSettings(train=_base(dataset, epochs=3), out=out, trials=100, time_budget=2.0, metric="accuracy"))
    seconds = time.perf_counter() - started
    assert result.stopped_by_time and 1 <= len(result.trials) < 100
    assert seconds < 2.0 + 15, "no trial starts after the budget; the last stops at its next epoch end"
    budgets = [json.loads((out / t["run"] / "settings.json").read_text())["time_budget"] for t in result.trials]
    assert all(0 < b <= 2.0 for b in budgets) and budgets == sorted(budgets, reverse=True), "each trial gets what is left"
    saved = json.loads((out / RESULTS).read_text())
    assert saved["direction"] == "maximize"
    assert saved["best"]["value"] == max(t["value"] for t in result.trials if t["state"] == "COMPLETE")


def test_a_killed_study_resumes_and_tries_the_interrupted_trial_again(dataset: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "study"
    command = [sys.executable, "-m", "instacli", "tune", "--data", str(dataset), *TINY_FLAGS, "--epochs", "4", "--trials", "2", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "INSTACLI_WARMUP_EPOCHS": "1"})
    metrics = out / "trials" / "trial-000" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().strip()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [t.state.name for t in _study(out).trials] == ["RUNNING"], "killed mid-trial: the study still says it runs"

    result = run_cli("tune", "--out", out, "--resume", "-q")
    assert result.code == 0, result.stderr
    trials = _study(out).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].params == trials[0].params and trials[1].user_attrs["retry_of"] == 0, "the killed trial is tried again"
    assert is_run(out / BEST)
    assert json.loads((out / BEST / "settings.json").read_text())["warmup_epochs"] == 1, "the study's own settings, not given again"


def test_search_space_leaves_out_what_cannot_matter(dataset: Path) -> None:
    names = lambda settings, task: [d.name for d in search_space(settings, task)]  # noqa: E731
    assert names(_base(dataset), "both") == ["lr", "encoder_lr", "weight_decay", "likes_weight", "augment", "random_erasing", "epochs"]
    # a frozen encoder: no encoder learning rate, no augmentation; one task: no balance between two
    assert names(_base(dataset, freeze_encoder=True), "category") == ["lr", "weight_decay", "epochs"]
    epochs = next(d for d in search_space(_base(dataset, epochs=30), "both") if d.name == "epochs")
    assert (epochs.low, epochs.high) == (10, 30)


@pytest.mark.parametrize(("flags", "message"), [
    (["--trials", "0"], "--trials 0: Input should be greater than or equal to 1"),
    (["--time-budget", "soon"], "time budget 'soon'"),
    (["--metric", "f1"], "--metric 'f1': choose one of loss, accuracy, likes"),
    (["--encoder", "nope"], "nope"),
    (["--epochs", "0"], "epochs=0"),
    (["--task", "category", "--metric", "likes"], "--metric likes: the runs on"),
])
def test_bad_flags_are_one_line_errors(dataset: Path, tmp_path: Path, run_cli, flags: list[str], message: str) -> None:
    result = run_cli("tune", "--data", dataset, "--out", tmp_path / "study", *flags)
    assert result.code == 2 and result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "study").exists(), "refused before anything is written"


def test_resume_errors_are_one_line(dataset: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "study"
    result = run_cli("tune", "--out", out, "--resume")
    assert result.code == 2 and "holds no study" in result.stderr and "without --resume" in result.stderr
    (out / "trials").mkdir(parents=True)
    result = run_cli("tune", "--data", dataset, "--out", out)
    assert result.code == 2 and "already exists; pass --resume" in result.stderr
    result = run_cli("tune", "--data", dataset, "--out", out, "--resume")
    assert result.code == 2 and "drop --data" in result.stderr


def test_missing_optuna_names_the_extra(dataset: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    result = run_cli("tune", "--data", dataset, "--out", tmp_path / "study")
    assert result.code == 2 and 'pip install "instacli[tune]"' in result.stderr and len(result.stderr.strip().splitlines()) == 1
