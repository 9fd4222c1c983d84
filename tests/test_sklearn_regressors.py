"""``ridge`` / ``gbrt``: fitted after training, saved without pickles, refitted identically after a load."""

from __future__ import annotations

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
