"""Knowledge distillation: a small encoder trained from scratch learns to reproduce a pretrained teacher's embeddings.

A from-scratch encoder (``vit-scratch``) only knows the few thousand photos it was trained on, so a
photo of a species they lack looks to it like whatever it resembles most; a pretrained teacher
(``efficientnet-lite0``) has seen ImageNet and places such a photo near other animals. With
``--distill-from TEACHER`` the student gets a second target per training photo: a linear projection
of its embedding must predict the teacher's standardized embedding of the same photo (feature
distillation; mean squared error). The projection is used in training only and is not saved.

Why embeddings, not the teacher's category probabilities (DeiT's soft labels): on the training
photos a good teacher is sure of the category, so two-class soft labels add little beyond the label
itself; its 1280-d embedding says what the photo looks like, which is the knowledge that carries
to unseen sources.

The teacher embeds each training photo once (its central view, at its own resolution), cached like a
frozen encoder's embeddings (:mod:`instacli.embedding_cache`); the student sees augmented views
of those photos. Running the teacher on every augmented view would multiply the training time
several-fold on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from instacli import registry
from instacli.encoders import ImageEncoder
from instacli.errors import InstacliError


def teacher_encoder(spec: str) -> tuple[ImageEncoder, str, dict]:
    """The teacher named by ``--distill-from``: a trained run folder (its encoder, fine-tuned or not)
    or a registered encoder with its default options (e.g. its pretrained weights).

    Returns the encoder (frozen, in eval mode), its name and its resolved options.
    """
    if Path(spec).is_dir():
        from instacli.model import load_run

        loaded = load_run(spec)
        encoder, name, options = loaded.model.encoder, loaded.config.encoder, loaded.config.encoder_options
    elif spec in registry.encoders.names():
        options = registry.encoders.resolve_options(spec, None)
        encoder, name = registry.encoders.create(spec, **options), spec
    else:
        raise InstacliError(
            f"--distill-from {spec}: neither a run folder nor an encoder; give a trained run or one of {', '.join(registry.encoders.names())}"
        )
    return encoder.requires_grad_(False).eval(), name, options


def standardize(targets: torch.Tensor) -> torch.Tensor:
    """Each embedding dimension to mean 0, std 1 over the training photos, so that every dimension
    weighs alike in the loss (raw EfficientNet features span orders of magnitude)."""
    targets = targets.float()
    return (targets - targets.mean(0)) / targets.std(0).clamp_min(1e-6)


def distill_loss(projected: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's projected embeddings and the standardized teacher's."""
    return F.mse_loss(projected.float(), targets.float())
