"""``--distill-from``: the student also learns a teacher's answers on unlabelled transfer photos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from instacli import registry
from instacli.augment import crop, eval_view, normalize
from instacli.distill import TRANSFER_SHARE, VIEWS, TransferSet, check_student, teacher_model, view_boxes, view_probabilities
from instacli.errors import InstacliError
from instacli.model import load_run
from instacli.settings import TrainSettings
from instacli.training import train
from instacli.progress import Reporter
from tests.conftest import CliResult, TINY_VIT, make_photo_tree

COUNTS = {"animal": 12, "landscape": 12}


class Stages(Reporter):
    def __init__(self) -> None:
        self.stages: list[str] = []

    def stage_start(self, description: str, total: int | None) -> None:
        self.stages.append(description)


def _build(photos: Path, out: Path) -> Path:
    from instacli_datasets import build_dataset

    build_dataset(photos, out, synthetic="seed")
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photo_tree(tmp_path_factory.mktemp("distill") / "src", COUNTS)


@pytest.fixture(scope="module")
def data(photos: Path) -> Path:
    return _build(photos, photos.parent / "data")


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


@torch.inference_mode()
def _predicted(run: Path, data: Path) -> torch.Tensor:
    from instacli.split_arrays import load_split_arrays

    model = load_run(run).model
    images = load_split_arrays(data, "train", TrainSettings(data=data)).images(model.encoder.preprocess.resize_size, 0)
    embedding = model.encoder(eval_view(images, model.encoder.preprocess))
    return model.classify(embedding, embedding).argmax(1)


def _student(data: Path, out: Path, reporter: Any = None, **overrides: Any) -> Path:
    settings = {"encoder_options": TINY_VIT, "epochs": 6, "batch_size": 8, "workers": 0, "warmup_epochs": 1, "task": "category", **overrides}
    train(TrainSettings(data=data, out=out, **settings), reporter)
    return out


def test_a_student_learns_the_teachers_answers_on_the_transfer_photos(photos: Path, data: Path, contrary_teacher: Path, tmp_path: Path) -> None:
    """The transfer photos are the training photos here, so the teacher's answers contradict their labels."""
    from instacli.split_arrays import load_split_arrays

    teacher_says = _predicted(contrary_teacher, data)
    labels = load_split_arrays(data, "train", TrainSettings(data=data)).labels
    assert (teacher_says != labels).float().mean() > 0.8
    plain = _predicted(_student(data, tmp_path / "plain"), data)
    taught = _predicted(_student(data, tmp_path / "taught", distill_from=str(contrary_teacher), distill_photos=[str(photos)],
                                 distill_weight=10.0), data)
    agreement = {name: float((said == teacher_says).float().mean()) for name, said in (("plain", plain), ("taught", taught))}
    assert agreement["taught"] > agreement["plain"] + 0.3, agreement


def test_an_encoder_teacher_labels_crops_of_the_readable_transfer_photos(photos: Path, data: Path, tmp_path: Path) -> None:
    transfer = tmp_path / "unlabelled"
    transfer.mkdir()
    for photo in sorted(photos.rglob("*.jpg"))[::4]:
        (transfer / photo.name).write_bytes(photo.read_bytes())
    (transfer / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    reporter = Stages()
    _student(data, tmp_path / "run", reporter, epochs=1, distill_from="vit-scratch", distill_photos=[str(transfer)])
    assert f"teacher vit-scratch labels {VIEWS} crops of 6 transfer photos (1 unreadable files skipped)" in reporter.stages
    assert "embedding 16 train images (teacher vit-scratch)" in reporter.stages  # its probe, fitted first


@pytest.mark.parametrize(("task", "frozen", "text_to_classifier"), [("likes", False, False), ("both", True, False), ("both", False, True)])
def test_a_student_without_a_category_head_learned_from_the_image_is_refused(task: str, frozen: bool, text_to_classifier: bool) -> None:
    with pytest.raises(InstacliError, match="--distill-from"):
        check_student(task, frozen, text_to_classifier)


def test_transfer_batches_depend_on_seed_epoch_step_and_process_only() -> None:
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 3, 2, 2)
    transfer = TransferSet(images, torch.rand(50, VIEWS, 2, 3), torch.rand(50, VIEWS, 2))
    photos, boxes, answers = transfer.batch(16, 42, 3, 7, 0)
    assert photos.shape == (round(16 * TRANSFER_SHARE), 3, 2, 2) and boxes.shape == (8, 2, 3) and answers.shape == (8, 2)
    rows = photos[:, 0, 0, 0].long()
    assert any(torch.equal(boxes[i], transfer.boxes[rows[i], v]) and torch.equal(answers[i], transfer.probabilities[rows[i], v])
               for i in range(8) for v in range(VIEWS))  # a crop and the teacher's answer for that crop
    again = transfer.batch(16, 42, 3, 7, 0)
    assert torch.equal(photos, again[0]) and torch.equal(boxes, again[1])  # a resumed step draws the same crops
    assert not any(torch.equal(photos, transfer.batch(16, *args)[0]) for args in ((42, 3, 8, 0), (42, 4, 7, 0), (42, 3, 7, 1), (1, 3, 7, 0)))


def test_the_teacher_answers_for_each_crop_and_its_first_crop_is_the_evaluation_view(contrary_teacher: Path, data: Path) -> None:
    from instacli.split_arrays import load_split_arrays

    teacher, config, needs_head = teacher_model(str(contrary_teacher), ["animal", "landscape"], {})
    preprocess = teacher.encoder.preprocess
    images = load_split_arrays(data, "train", TrainSettings(data=data)).images(preprocess.resize_size, 0)
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


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--distill-from", "no-such-teacher"], "neither a run folder nor an encoder"),
        (["--distill-from", "vit-scratch", "--freeze-encoder"], "cannot be frozen"),
        (["--distill-from", "vit-scratch", "--distill-photos", "no/such/folder"], "--distill-photos no/such/folder: not a folder"),
        (["--distill-from", "vit-scratch", "--distill-photos", "EMPTY"], "no readable photo"),
    ],
)
def test_a_bad_teacher_or_transfer_folder_is_a_one_line_error(
    data: Path, tmp_path: Path, run_cli: Callable[..., CliResult], extra: list[str], message: str
) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"not a photo")
    extra = [str(junk) if arg == "EMPTY" else arg for arg in extra]
    result = run_cli("train", "--data", data, "--out", tmp_path / "run", "--epochs", "1", "--workers", "0", *extra)
    assert result.code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
