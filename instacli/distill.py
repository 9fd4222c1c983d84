"""Knowledge distillation: an encoder trained from scratch learns from a pretrained teacher's answers on crops of its photos.

With ``--distill-from TEACHER`` the student gets a second target beside each label: the teacher's
calibrated category probabilities for the same crop of the photo (DeiT-style soft distillation).
The teacher answers once per training photo for :data:`VIEWS` fixed crops (the central view and
random resized crops, mirrored at random), at its own resolution, before training; the student then
trains on those same crops of its own low-resolution copy (one box crops the same region at any
resolution, :func:`instacli.augment.crop`), drawn at random each step. Asking the teacher about
every new random crop would cost a teacher forward pass per student step, many times the student's
training time on a CPU.

The teacher is a trained run (its category head) or an encoder name, for which that encoder's
frozen-probe recipe is fitted here first: a linear probe on its embeddings of the training photos,
with the semantic prior where the encoder has an ImageNet head (:mod:`instacli.probe`).

Measured (README, shift benchmark): on posts-dev's training photos the teacher's answers are the
labels, slightly smoothed (it contradicts 0.6–3.6 % of crops), so distillation adds little there and
the fixed crops cost augmentation: vit-scratch on fold 1 scored 71.0 % on new sources against 78.0 %
without. The teacher's knowledge reaches the student only through photos unlike the training ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from instacli import registry
from instacli.augment import crop, normalize, random_boxes
from instacli.encoders import Preprocess
from instacli.errors import InstacliError
from instacli.launch import precision_autocast
from instacli.model import ModelConfig, MultiTaskModel, build_model, load_run

#: Crops per training photo the teacher labels: the central view and 3 random resized crops.
VIEWS = 4


def teacher_model(spec: str, class_names: list[str], scaler: dict) -> tuple[MultiTaskModel, ModelConfig, bool]:
    """The teacher of ``--distill-from``: (network, its config, whether its category head still needs fitting).

    A run folder brings its own trained head and must know the same categories, in the same order.
    An encoder name gets the frozen-probe recipe: the head is fitted by the caller on the encoder's
    embeddings of the training photos.
    """
    if Path(spec).is_dir():
        run = load_run(spec)
        if run.model.classifier is None or run.config.class_names != class_names:
            raise InstacliError(
                f"--distill-from {spec}: the teacher run predicts {run.config.class_names if run.model.classifier is not None else 'no category'}, "
                f"the data has {class_names}; give a run trained on the same categories"
            )
        return run.model.requires_grad_(False).eval(), run.config, False
    if not registry.encoders.knows(spec):
        raise InstacliError(
            f"--distill-from {spec}: neither a run folder nor an encoder; give a trained run or one of "
            f"{', '.join(registry.encoders.names() + registry.encoders.prefix_names())}"
        )
    config = ModelConfig(
        encoder=spec, encoder_options=registry.encoders.resolve_options(spec), regressor="linear", regressor_options={},
        class_names=class_names, scaler=scaler, task="category", semantic_prior="auto", probe_head=True,
    )
    teacher = build_model(config).eval()
    teacher.encoder.requires_grad_(False)  # the probe fits (then freezes) the head
    return teacher, config, True


def view_boxes(n: int, student: Preprocess, seed: int) -> torch.Tensor:
    """``(n, VIEWS, 2, 3)`` crop boxes per photo: first the student's evaluation view (its central
    ``image_size`` of the ``resize_size`` square), then random resized crops."""
    boxes = random_boxes(n * VIEWS, generator=torch.Generator().manual_seed(seed)).view(n, VIEWS, 2, 3)
    boxes[:, 0] = 0
    boxes[:, 0, 0, 0] = boxes[:, 0, 1, 1] = student.image_size / student.resize_size
    return boxes


@torch.inference_mode()
def view_probabilities(
    teacher: MultiTaskModel, temperature: float, images: torch.Tensor, boxes: torch.Tensor, device: torch.device,
    precision: str, batch_size: int = 64, on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The teacher's calibrated category probabilities ``(n, VIEWS, C)`` for each box of each photo."""
    preprocess = teacher.encoder.preprocess
    out = []
    for start in range(0, len(images), batch_size):
        photos, photo_boxes = images[start : start + batch_size].to(device), boxes[start : start + batch_size]
        views = photos.repeat_interleave(VIEWS, dim=0)
        pixels = normalize(crop(views, photo_boxes.reshape(-1, 2, 3), preprocess.image_size), preprocess)
        with precision_autocast(device, precision):
            embedding = teacher.encoder(pixels)
            logits = teacher.classify(embedding, embedding)
        out.append((logits.float() / temperature).softmax(dim=1).view(len(photos), VIEWS, -1).cpu())
        if on_batch:
            on_batch(len(photos))
    return torch.cat(out)


def head_digest(teacher: MultiTaskModel) -> str:
    """A digest of the teacher's weights outside its encoder (which the embedding cache's key covers already)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        if not name.startswith("encoder."):
            digest.update(name.encode() + tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def pick_views(boxes: torch.Tensor, probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the labelled crops per photo of a batch, at random: its box and the teacher's probabilities."""
    rows = torch.arange(len(boxes), device=boxes.device)
    pick = torch.randint(boxes.shape[1], (len(boxes),), device=boxes.device)
    return boxes[rows, pick], probabilities[rows, pick]


def distill_loss(logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's category logits against the teacher's probabilities."""
    return F.cross_entropy(logits.float(), teacher_probabilities.float())
