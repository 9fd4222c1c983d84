"""Knowledge distillation: an encoder trained from scratch learns what a pretrained teacher says of
photos unlike its training photos.

vit-scratch trained on glaciers and seas against animals in grass calls a forest an "animal": no
training photo says otherwise (README: shift benchmark). A pretrained teacher knows better, but it
can only pass that on through photos that show such things. So with ``--distill-from TEACHER``
each training step also shows the student a batch of unlabelled *transfer photos* (half as many as
labelled ones, in the same training view) with the teacher's calibrated category probabilities of
the whole photo as their targets. The transfer photos are ``--distill-photos``: by default the 124
varied CC0 photos instacli ships (62 species, deserts, forests; :func:`instacli.demo.sample_folder`),
or the user's own unlabelled posts.

vit-scratch's registry recipe names efficientnet-lite0 (bundled weights, offline) as its teacher, so
``--distill-from auto`` (the default) distills for it; ``--distill-from none`` turns it off.

The teacher is a trained run (its category head) or an encoder name, for which that encoder's
frozen-probe recipe is fitted here first: a linear probe on its embeddings of the training photos,
with the semantic prior where the encoder has an ImageNet head (:mod:`instacli.probe`).

Measured before (README): the teacher's answers on crops of the training photos themselves are the
labels, slightly smoothed (it contradicts 0.6–3.6 % of crops), and taught nothing about forests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from instacli import registry
from instacli.augment import eval_view
from instacli.errors import InstacliError
from instacli.launch import precision_autocast
from instacli.model import ModelConfig, MultiTaskModel, build_model, load_run

#: Transfer photos per labelled photo in a training step.
TRANSFER_SHARE = 0.5
#: ``--distill-photos`` name of the photos instacli ships.
BUNDLED = "bundled"


def teacher_spec(distill_from: str, encoder: str, task: str, freeze_encoder: bool, text_to_classifier: bool) -> str | None:
    """The teacher to distill from, or None: ``auto`` is the encoder's recipe where it can apply
    (a student with a category head trained from the image), an explicit teacher is checked."""
    if distill_from == "none":
        return None
    if distill_from == "auto":
        spec = registry.encoders.get(encoder).recipe.get("distill_from")
        return None if spec is None or freeze_encoder or task == "likes" or text_to_classifier else spec
    if freeze_encoder:
        raise InstacliError("--distill-from teaches the encoder; it cannot be frozen (drop --freeze-encoder)")
    if task == "likes":
        raise InstacliError("--distill-from teaches the category head; this data has no categories (drop --distill-from)")
    if text_to_classifier:
        raise InstacliError("--distill-from: transfer photos have no caption for --text-to-classifier; drop one of the two")
    return distill_from


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
            f"--distill-from {spec}: neither a run folder nor an encoder; give a trained run, none, or one of "
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


@torch.inference_mode()
def teacher_probabilities(
    teacher: MultiTaskModel, temperature: float, images: torch.Tensor, device: torch.device, precision: str,
    batch_size: int = 64, on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The teacher's calibrated category probabilities ``(n, C)`` for the evaluation view of each uint8 square."""
    out = []
    for start in range(0, len(images), batch_size):
        photos = images[start : start + batch_size].to(device)
        with precision_autocast(device, precision):
            embedding = teacher.encoder(eval_view(photos, teacher.encoder.preprocess))
            logits = teacher.classify(embedding, embedding)
        out.append((logits.float() / temperature).softmax(dim=1).cpu())
        if on_batch:
            on_batch(len(photos))
    return torch.cat(out)


@dataclass
class TransferSet:
    """The transfer photos (uint8 squares at the student's decode size) and the teacher's probabilities for each."""

    images: torch.Tensor
    probabilities: torch.Tensor

    def batch(self, labelled: int, seed: int, epoch: int, step: int, process: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The transfer photos shown beside ``labelled`` training photos: drawn with replacement from
        a generator of (seed, epoch, step, process) alone, so a resumed epoch draws what it drew before."""
        state = int(np.random.SeedSequence([seed, epoch, step, process]).generate_state(1)[0])
        rows = torch.randint(len(self.images), (max(1, round(labelled * TRANSFER_SHARE)),), generator=torch.Generator().manual_seed(state))
        return self.images[rows], self.probabilities[rows]


def distill_loss(logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's category logits against the teacher's probabilities."""
    return F.cross_entropy(logits.float(), teacher_probabilities.float())
