"""``ridge`` / ``gbrt``: fitted after training, saved without pickles, refitted identically after a load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from instacli.errors import InstacliError
from instacli.model import load_run
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import make_photo_tree

TINY_VIT = {"image_size": 32, "patch_size": 8, "width": 32, "heads": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("sk")
    build_dataset(make_photo_tree(root / "src", {"animal": 16, "landscape": 16}), root / "data", synthetic="seed")
    return root / "data"


@pytest.mark.parametrize("regressor", ["ridge", "gbrt"])
def test_fitted_after_training_and_reloaded(data: Path, tmp_path: Path, regressor: str) -> None:
    run = tmp_path / regressor
    train(TrainSettings(data=data, out=run, regressor=regressor, encoder_options=TINY_VIT, epochs=2, batch_size=8))
    assert not list(run.rglob("*.pkl"))
    x, f = torch.randn(6, 3, 32, 32), torch.randn(6, 2)
    with torch.inference_mode():
        a = load_run(run).model(x, f)[1]
        b = load_run(run).model(x, f)[1]
    assert torch.equal(a, b)  # the refit after a load is deterministic
    if regressor == "ridge":  # (gbrt's leaves need 20 rows: on 22 it is one constant, rightly)
        assert np.ptp(a.numpy()) > 0
    assert load_run(run).model.regressor.train_xy.shape[0] == 22  # the training rows (70 % of 32)


def test_likes_only_needs_a_frozen_encoder(data: Path, tmp_path: Path) -> None:
    with pytest.raises(InstacliError, match="--freeze-encoder"):
        train(TrainSettings(data=data, out=tmp_path / "r", regressor="ridge", task="likes", encoder_options=TINY_VIT, epochs=1))


@pytest.mark.parametrize(("regressor", "options"), [("ridge", {}), ("gbrt", {"max_iter": 10})])
def test_likes_only_on_a_frozen_encoder_is_fitted_directly(data: Path, tmp_path: Path, regressor: str, options: dict) -> None:
    """Frozen encoder + ridge/gbrt + likes only has nothing to train by gradient: it was an
    'optimizer got an empty parameter list' crash; now the regressor is fitted on the training
    embeddings without epochs and the run folder is complete."""
    from instacli.evaluation import evaluate
    from instacli.prediction import predict_folder

    run = tmp_path / regressor
    result = train(TrainSettings(data=data, out=run, regressor=regressor, regressor_options=options, task="likes",
                                 freeze_encoder=True, encoder_options=TINY_VIT, epochs=5, batch_size=8))
    assert (result.epochs_run, result.best_epoch, result.optimizer_steps) == (0, 0, 0)
    assert {p.name for p in run.iterdir()} >= {"model.safetensors", "config.json", "settings.json", "metrics.jsonl"}
    assert not list(run.rglob("*.pkl")) and not (run / "checkpoint").exists()
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert record["epoch"] == 0 and record["val_ce"] == 0 and record["val_likes_loss"] > 0 and record["images_seen"] == 22
    assert load_run(run).model.regressor.train_xy.shape[0] == 22
    # the saved run reproduces the validation score the record holds (L1 on standardized log-likes)
    scaler = json.loads((run / "config.json").read_text())["scaler"]
    validation = evaluate(run, data, split="validation")
    assert validation["log_likes_mae"] == pytest.approx(record["val_likes_loss"] * scaler["target_std"], rel=1e-3)
    summary = predict_folder(run, data.parent / "src", tmp_path / "p.jsonl", workers=0)
    assert summary.scored == 32
