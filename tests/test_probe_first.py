"""``--probe-first`` (LP-FT): fine-tuning starts from the frozen encoder's linear probe, not from a random head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from instacli.errors import InstacliError
from instacli.model import load_run
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import TINY_VIT, make_photo_tree



@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("lpft")
    build_dataset(make_photo_tree(root / "src", {"animal": 12, "landscape": 12}), root / "data", synthetic="seed")
    return root / "data"


def _train(data: Path, out: Path, **overrides: Any) -> Path:
    settings = {"encoder_options": TINY_VIT, "epochs": 1, "batch_size": 8, "workers": 0, **overrides}
    train(TrainSettings(data=data, out=out, **settings))
    return out


def test_fine_tuning_starts_from_the_probe(data: Path, tmp_path: Path) -> None:
    probe = load_file(str(_train(data, tmp_path / "probe", freeze_encoder=True) / "model.safetensors"))
    # a learning rate too small to move anything: what is left is where fine-tuning started
    start = load_file(str(_train(data, tmp_path / "lpft", probe_first=True, lr=1e-9, encoder_lr=1e-9) / "model.safetensors"))
    head = [k for k in probe if k.startswith("classifier.")]
    assert head and all(torch.allclose(probe[k].float(), start[k].float(), atol=1e-5) for k in head)
    assert load_run(tmp_path / "lpft").config.probe_head


def test_the_probe_is_then_fine_tuned_with_the_encoder(data: Path, tmp_path: Path) -> None:
    probe = load_file(str(_train(data, tmp_path / "probe", freeze_encoder=True) / "model.safetensors"))
    tuned = load_file(str(_train(data, tmp_path / "lpft", probe_first=True, lr=1e-2, encoder_lr=1e-2, epochs=2) / "model.safetensors"))
    assert not torch.allclose(probe["classifier.1.weight"].float(), tuned["classifier.1.weight"].float(), atol=1e-4)
    encoder = [k for k in probe if k.startswith("encoder.") and probe[k].is_floating_point()]
    assert any(not torch.allclose(probe[k].float(), tuned[k].float()) for k in encoder)


def test_probe_first_needs_categories(data: Path, tmp_path: Path) -> None:
    with pytest.raises(InstacliError, match="--probe-first"):
        _train(data, tmp_path / "run", probe_first=True, task="likes")
