"""``--distill-from``: the student's embeddings learn the teacher's, the run folder stays an ordinary run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from instacli import registry
from instacli.augment import eval_view
from instacli.distill import teacher_encoder
from instacli.model import load_run
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import CliResult, make_photo_tree

TINY_VIT = {"image_size": 32, "patch_size": 8, "width": 32, "heads": 2, "drop_path": 0.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("distill")
    build_dataset(make_photo_tree(root / "src", {"animal": 12, "landscape": 12}), root / "data", synthetic="seed")
    return root / "data"


@pytest.fixture(scope="module")
def teacher(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen, randomly initialized encoder of another width: its embeddings are a fixed function of the photo."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    train(TrainSettings(data=data, out=run, encoder_options={**TINY_VIT, "width": 48}, freeze_encoder=True, epochs=1, batch_size=8, workers=0, seed=1))
    return run


def _student(data: Path, out: Path, **overrides: Any) -> Path:
    settings = {"encoder_options": TINY_VIT, "epochs": 6, "batch_size": 8, "workers": 0, "warmup_epochs": 1, **overrides}
    train(TrainSettings(data=data, out=out, **settings))
    return out


def _train_embeddings(encoder: torch.nn.Module, data: Path) -> torch.Tensor:
    from instacli.splits import load_split_arrays

    split = load_split_arrays(data, "train", TrainSettings(data=data))
    with torch.inference_mode():
        return encoder.eval()(eval_view(split.images(encoder.preprocess.resize_size, 0), encoder.preprocess)).float()


def _similarity(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA: how alike two sets of embeddings of the same photos are, up to rotation and scale
    (1 = the same geometry), comparable across widths."""
    x, y = (t.double() - t.double().mean(0) for t in (x, y))
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def test_a_distilled_student_reproduces_the_teachers_embeddings(data: Path, teacher: Path, tmp_path: Path) -> None:
    distilled = _student(data, tmp_path / "distilled", distill_from=str(teacher), distill_weight=3.0)
    plain = _student(data, tmp_path / "plain")
    history = [json.loads(line) for line in (distilled / "metrics.jsonl").read_text().splitlines()]
    distill_part = [r["train_loss"] - r["train_ce"] - r["train_likes_loss"] for r in history]
    assert distill_part[0] > 0 and distill_part[-1] < 0.7 * distill_part[0]

    targets = _train_embeddings(teacher_encoder(str(teacher))[0], data)
    alike = {run.name: _similarity(_train_embeddings(load_run(run).model.encoder, data), targets) for run in (distilled, plain)}
    print(alike)
    assert alike["distilled"] > alike["plain"] + 0.05, alike


def test_the_run_folder_keeps_no_distillation_weights(data: Path, teacher: Path, tmp_path: Path) -> None:
    run = _student(data, tmp_path / "run", distill_from=str(teacher), epochs=1)
    with safe_open(str(run / "model.safetensors"), "pt") as handle:
        assert not [k for k in handle.keys() if "distill" in k]
    loaded = load_run(run)
    assert loaded.model.distill_head is None and loaded.config.encoder == "vit-scratch"


def test_a_teacher_named_by_encoder_gets_its_default_options() -> None:
    encoder, name, options = teacher_encoder("vit-scratch")
    assert name == "vit-scratch" and options == registry.encoders.resolve_options("vit-scratch") and encoder.embed_dim == 192
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--distill-from", "no-such-teacher"], "neither a run folder nor an encoder"),
        (["--distill-from", "vit-scratch", "--freeze-encoder"], "cannot be frozen"),
    ],
)
def test_a_bad_teacher_is_one_line_error(
    data: Path, tmp_path: Path, run_cli: Callable[..., CliResult], extra: list[str], message: str
) -> None:
    result = run_cli("train", "--data", data, "--out", tmp_path / "run", "--epochs", "1", "--workers", "0", *extra)
    assert result.code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
