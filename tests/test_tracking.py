"""``--report-to``: the settings, per-step loss and learning rate, per-epoch metrics and the curves
reach TensorBoard's event files and MLflow's local store, and read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_VIT, make_photo_tree

TINY = [arg for key, value in TINY_VIT.items() for arg in ("-E", f"{key}={value}")]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("tracking")
    build_dataset(make_photo_tree(root / "src"), root / "data", synthetic="seed", seed=1, workers=1)
    return root / "data"


def _train(run_cli, data: Path, run: Path, trackers: str) -> None:
    result = run_cli("train", "--data", data, "--out", run, "--epochs", "2", "--batch-size", "8", "--workers", "0", "--quiet",
                     "--report-to", trackers, *TINY)
    assert result.code == 0, result.stderr


def test_tensorboard_gets_steps_epochs_settings_and_curves(tiny_dataset: Path, tmp_path: Path, run_cli) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    _train(run_cli, tiny_dataset, run, "tensorboard")
    events = [p.parent for p in (run / "logs").rglob("events.out.tfevents.*")]
    assert events, list((run / "logs").rglob("*"))
    scalars: dict[str, list] = {}
    images: list[str] = []
    for folder in set(events):
        accumulator = EventAccumulator(str(folder)).Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars[tag] = accumulator.Scalars(tag)
        images += accumulator.Tags()["images"]
    history = [line for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    assert len(scalars["epoch/val_loss"]) == len(history) == 2
    assert len(scalars["train/loss"]) == scalars["epoch/optimizer_steps"][-1].value > 0  # one point per optimizer step
    assert scalars["train/lr"][0].value > 0 and "curves" in images


def test_mlflow_gets_params_metrics_and_the_curves(tiny_dataset: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "instacli-test")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the local file store: no database package needed in a test
    _train(run_cli, tiny_dataset, tmp_path / "run", "mlflow")
    mlflow.set_tracking_uri(store.as_uri())
    runs = mlflow.search_runs(experiment_names=["instacli-test"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    found = runs[0]
    assert found.data.params["epochs"] == "2" and found.data.params["encoder"] == "vit-scratch"
    assert {"epoch/val_loss", "train/loss", "train/lr"} <= set(found.data.metrics)
    history = mlflow.MlflowClient().get_metric_history(found.info.run_id, "epoch/val_loss")
    assert len(history) == 2
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(found.info.run_id)]
    assert "curves.png" in artifacts


def test_a_tracker_that_is_not_installed_is_one_line_before_any_work(tiny_dataset: Path, tmp_path: Path, run_cli,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = run_cli("train", "--data", tiny_dataset, "--out", tmp_path / "run", "--report-to", "wandb", *TINY)
    assert result.code == 2 and "--report-to wandb: the wandb package is not installed" in result.stderr
    assert not (tmp_path / "run").exists()
    result = run_cli("train", "--data", tiny_dataset, "--out", tmp_path / "run", "--report-to", "tensorbored")
    assert result.code == 2 and "report_to" in result.stderr
