"""Knowledge distillation: an encoder trained from scratch learns what a pretrained teacher says of
photos unlike its training photos.

vit-scratch trained on glaciers and seas against animals in grass calls a forest an "animal": no
training photo says otherwise (README: shift benchmark). A pretrained teacher knows better, but it
can only pass that on through photos that show such things; its answers on the training photos
themselves are their labels, slightly smoothed (it contradicts 0.6–3.6 % of crops), and taught
nothing. So with ``--distill-from TEACHER`` each training step also shows the student unlabelled
*transfer photos* (``--distill-photos``: the user's own posts, or the 124 varied CC0 photos instacli
ships), half as many as labelled ones, with the teacher's calibrated category probabilities as their
targets. The teacher answers once, before training, for :data:`VIEWS` crops of each transfer photo
(the whole photo and random crops down to a tenth of it), so that a crop of a polar bear's photo
that misses the bear is snow to both; the student sees one of those crops per photo and step,
mirrored and colour-jittered as training photos are.

The teacher is a trained run (its category head) or an encoder name, for which that encoder's
frozen-probe recipe is fitted here first: a linear probe on its embeddings of the training photos,
with the semantic prior where the encoder has an ImageNet head (:mod:`instacli.probe`).

A transfer set teaches what it shows (README, shift benchmark): with the bundled photos as transfer
set, efficientnet-lite0 teaching vit-scratch, held-out forests go from 19.5 to 82 % right (the bundled
photos show forests), while held-out glaciers and seas fall from 93 and 88 % to 67–78 and 64–69 %
(they show polar bears on snow and animals in water, and no snowy or watery landscape). Hence
distillation is opt-in, and the transfer photos to give are unlabelled posts of the kinds the
model will meet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from instacli import registry
from instacli.augment import crop, normalize, random_boxes
from instacli.encoders import Preprocess
from instacli.errors import InstacliError
from instacli.launch import precision_autocast
from instacli.model import ModelConfig, MultiTaskModel, build_model, load_run

#: Transfer photos per labelled photo in a training step.
TRANSFER_SHARE = 0.5
#: Crops per transfer photo the teacher answers for: the student's evaluation view, then random crops
#: of :data:`CROP_SCALE` of the photo's area.
VIEWS = 8
CROP_SCALE = (0.1, 1.0)
#: ``--distill-photos`` name of the photos instacli ships.
BUNDLED = "bundled"


def check_student(task: str, freeze_encoder: bool, text_to_classifier: bool) -> None:
    """A student a teacher can teach: a category head trained from the image, by an encoder that learns."""
    if freeze_encoder:
        raise InstacliError("--distill-from teaches the encoder; it cannot be frozen (drop --freeze-encoder)")
    if task == "likes":
        raise InstacliError("--distill-from teaches the category head; this data has no categories (drop --distill-from)")
    if text_to_classifier:
        raise InstacliError("--distill-from: transfer photos have no caption for --text-to-classifier; drop one of the two")


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


def transfer_files(specs: list[str]) -> list[Path]:
    """The photo files of ``--distill-photos``: ``bundled`` and folders, each read as ``predict`` reads a folder."""
    from instacli.demo import sample_folder
    from instacli.prediction import list_photos

    files: list[Path] = []
    for spec in specs:
        folder = sample_folder() if spec == BUNDLED else Path(spec).expanduser()
        if not folder.is_dir():
            raise InstacliError(f"--distill-photos {spec}: not a folder; give folders of unlabelled photos, or {BUNDLED}")
        files += list_photos(folder).files
    return files


def view_boxes(n: int, student: Preprocess, seed: int) -> torch.Tensor:
    """``(n, VIEWS, 2, 3)`` crop boxes per photo (:func:`instacli.augment.random_boxes`): first the
    student's evaluation view (its central ``image_size`` of the ``resize_size`` square), then random crops."""
    boxes = random_boxes(n * VIEWS, scale=CROP_SCALE, generator=torch.Generator().manual_seed(seed)).view(n, VIEWS, 2, 3)
    boxes[:, 0] = 0
    boxes[:, 0, 0, 0] = boxes[:, 0, 1, 1] = student.image_size / student.resize_size
    return boxes


@torch.inference_mode()
def view_probabilities(
    teacher: MultiTaskModel, temperature: float, images: torch.Tensor, boxes: torch.Tensor, device: torch.device,
    precision: str, batch_size: int = 16, on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The teacher's calibrated category probabilities ``(n, VIEWS, C)`` for each box of each uint8 square
    (one box crops the same region at any resolution, so the teacher sees at its own size what the student will)."""
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


@dataclass
class TransferSet:
    """The transfer photos (uint8 squares at the student's decode size), the crops the teacher answered
    for (:func:`view_boxes`) and its probabilities for each."""

    images: torch.Tensor
    boxes: torch.Tensor
    probabilities: torch.Tensor

    def batch(self, labelled: int, seed: int, epoch: int, step: int, process: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(photos, one of their crops each, the teacher's answers) shown beside ``labelled`` training photos:
        drawn from a generator of (seed, epoch, step, process) alone, so a resumed epoch draws what it drew before."""
        state = int(np.random.SeedSequence([seed, epoch, step, process]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(state)
        rows = torch.randint(len(self.images), (max(1, round(labelled * TRANSFER_SHARE)),), generator=generator)
        views = torch.randint(self.boxes.shape[1], (len(rows),), generator=generator)
        return self.images[rows], self.boxes[rows, views], self.probabilities[rows, views]


def distill_loss(logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's category logits against the teacher's probabilities."""
    return F.cross_entropy(logits.float(), teacher_probabilities.float())
