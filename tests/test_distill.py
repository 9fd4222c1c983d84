"""``--distill-from``: the teacher answers for fixed crops of each training photo, the student learns from those answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from instacli import distill, registry
from instacli.augment import crop, eval_view, normalize
from instacli.distill import VIEWS, teacher_model, view_boxes, view_probabilities
from instacli.errors import InstacliError
from instacli.model import load_run
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import CliResult, TINY_VIT, make_photo_tree

COUNTS = {"animal": 12, "landscape": 12}


def _build(photos: Path, out: Path) -> Path:
    from instacli_datasets import build_dataset

    build_dataset(photos, out, synthetic="seed")
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distill")
    return _build(make_photo_tree(root / "src", COUNTS), root / "data")


@pytest.fixture(scope="module")
def contrary_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher trained on the same photos with the two category folders swapped: it answers the opposite of the labels."""
    root = tmp_path_factory.mktemp("contrary")
    photos = make_photo_tree(root / "src", COUNTS)
    (photos / "animal").rename(photos / "swap")
    (photos / "landscape").rename(photos / "animal")
    (photos / "swap").rename(photos / "landscape")
    run = root / "run"
    train(TrainSettings(data=_build(photos, root / "data"), out=run, encoder_options=TINY_VIT, freeze_encoder=True, epochs=1,
                        batch_size=8, workers=0, seed=1))
    return run


def _train_photos(data: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from instacli.split_arrays import load_split_arrays

    split = load_split_arrays(data, "train", TrainSettings(data=data))
    return split.images(size, 0), split.labels


@torch.inference_mode()
def _predicted(run: Path, data: Path) -> torch.Tensor:
    model = load_run(run).model
    images, _ = _train_photos(data, model.encoder.preprocess.resize_size)
    embedding = model.encoder(eval_view(images, model.encoder.preprocess))
    return model.classify(embedding, embedding).argmax(1)


def _student(data: Path, out: Path, **overrides: Any) -> Path:
    settings = {"encoder_options": TINY_VIT, "epochs": 6, "batch_size": 8, "workers": 0, "warmup_epochs": 1, "task": "category", **overrides}
    train(TrainSettings(data=data, out=out, **settings))
    return out


def test_a_student_learns_the_teachers_answers(data: Path, contrary_teacher: Path, tmp_path: Path) -> None:
    teacher_says = _predicted(contrary_teacher, data)
    _, labels = _train_photos(data, 8)
    assert (teacher_says != labels).float().mean() > 0.8  # the teacher contradicts the labels
    plain = _predicted(_student(data, tmp_path / "plain"), data)
    taught = _predicted(_student(data, tmp_path / "taught", distill_from=str(contrary_teacher), distill_weight=10.0), data)
    agreement = {name: float((said == teacher_says).float().mean()) for name, said in (("plain", plain), ("taught", taught))}
    assert agreement["taught"] > agreement["plain"] + 0.3, agreement


def test_the_teacher_answers_once_per_crop_and_its_first_crop_is_the_evaluation_view(contrary_teacher: Path, data: Path) -> None:
    teacher, config, needs_head = teacher_model(str(contrary_teacher), ["animal", "landscape"], {})
    assert not needs_head and config.encoder == "vit-scratch"
    preprocess = teacher.encoder.preprocess
    images, _ = _train_photos(data, preprocess.resize_size)
    boxes = view_boxes(len(images), preprocess, seed=0)
    assert boxes.shape == (len(images), VIEWS, 2, 3)
    central = normalize(crop(images, boxes[:, 0], preprocess.image_size), preprocess)
    assert (central - eval_view(images, preprocess)).abs().mean() < 0.05  # the first crop is the evaluation view
    seen = view_probabilities(teacher, config.temperature, images, boxes, torch.device("cpu"), "no")
    assert seen.shape == (len(images), VIEWS, 2) and torch.allclose(seen.sum(-1), torch.ones(len(images), VIEWS))
    with torch.inference_mode():
        logits = teacher.classify(*[teacher.encoder(eval_view(images, preprocess))] * 2)
    assert torch.allclose(seen[:, 0], (logits / config.temperature).softmax(1), atol=0.05)
    assert not torch.allclose(seen[:, 1:], seen[:, :1].expand(-1, VIEWS - 1, -1), atol=1e-4)  # other crops, other answers


def test_a_teacher_named_by_encoder_gets_the_frozen_probe_recipe() -> None:
    teacher, config, needs_head = teacher_model("vit-scratch", ["animal", "landscape"], {"features": [], "mean": [], "std": []})
    assert needs_head and config.probe_head and config.encoder_options == registry.encoders.resolve_options("vit-scratch")
    assert not any(p.requires_grad for p in teacher.encoder.parameters())


def test_a_teacher_of_other_categories_is_refused(contrary_teacher: Path) -> None:
    with pytest.raises(InstacliError, match="give a run trained on the same categories"):
        teacher_model(str(contrary_teacher), ["cat", "dog"], {})


def test_a_second_run_reuses_the_teachers_answers(data: Path, contrary_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _student(data, tmp_path / "first", distill_from=str(contrary_teacher), epochs=1)

    def asked_again(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the teacher was asked again")

    monkeypatch.setattr(distill, "view_probabilities", asked_again)
    _student(data, tmp_path / "second", distill_from=str(contrary_teacher), epochs=1)
    assert (tmp_path / "second" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--distill-from", "no-such-teacher"], "neither a run folder nor an encoder"),
        (["--distill-from", "vit-scratch", "--freeze-encoder"], "cannot be frozen"),
        (["--distill-from", "vit-scratch", "--task", "category", "--mixup", "0.5"], "use one or the other"),
    ],
)
def test_a_bad_teacher_is_a_one_line_error(
    data: Path, tmp_path: Path, run_cli: Callable[..., CliResult], extra: list[str], message: str
) -> None:
    result = run_cli("train", "--data", data, "--out", tmp_path / "run", "--epochs", "1", "--workers", "0", *extra)
    assert result.code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
