"""Batched image augmentation and cropping on uint8 tensors.

Images come from the decode cache as ``(B, 3, R, R)`` uint8 squares (``R = preprocess.resize_size``).
Training crops a random box of random scale and aspect per sample (RandomResizedCrop), flips half of
them and jitters brightness/contrast/saturation, all as a handful of batched tensor ops: one
``grid_sample`` call for the whole batch is several times cheaper than per-image torchvision
transforms on a 2-core CPU, and it runs on the GPU when there is one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from instacli.encoders import Preprocess
from instacli.errors import InstacliError

#: Test-time augmentation choices, by the number of forward passes they cost: ``none`` (the eval view),
#: ``flip`` (it and its mirror image, what ``--tta`` uses) and ``ten-crop`` (the eval view and the four
#: corner crops of the decoded square, each also mirrored).
TTA_CHOICES = ("none", "flip", "ten-crop")
#: The views of the CLI's ``--tta`` (other choices from Python): see the README for what each one gained.
TTA_DEFAULT = "flip"


def normalize(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """uint8 or [0, 1] images → normalized float tensor for the encoder."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    mean = torch.tensor(preprocess.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size × size`` square (evaluation view)."""
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample random crop of area ``scale`` and aspect ``ratio``, resized to ``size``, randomly flipped."""
    b = images.shape[0]
    dev = images.device
    area = torch.empty(b, device=dev).uniform_(*scale, generator=generator)
    log_r = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_r)
    sx = torch.sqrt(area * aspect).clamp(max=1.0)  # half-width in normalized [-1, 1] coordinates
    sy = torch.sqrt(area / aspect).clamp(max=1.0)
    tx = (torch.rand(b, device=dev, generator=generator) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, device=dev, generator=generator) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(b, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = sx * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(images.float() / 255.0, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(images: torch.Tensor, strength: float = 0.3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, contrast and saturation factors in ``[1 - strength, 1 + strength]`` per sample."""
    b = images.shape[0]

    def factors() -> torch.Tensor:
        return torch.empty(b, 1, 1, 1, device=images.device).uniform_(1 - strength, 1 + strength, generator=generator)

    x = images * factors()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factors() + mean
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - gray) * factors() + gray
    return x.clamp_(0.0, 1.0)


def train_view(images: torch.Tensor, preprocess: Preprocess, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augmented, normalized training batch from cached uint8 squares."""
    x = random_resized_crop(images, preprocess.image_size, generator=generator)
    return normalize(color_jitter(x, generator=generator), preprocess)


def eval_view(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Deterministic, normalized evaluation batch: the central crop of cached squares."""
    return normalize(center_crop(images, preprocess.image_size), preprocess)


def tta_views(images: torch.Tensor, preprocess: Preprocess, tta: str = "none") -> list[torch.Tensor]:
    """The deterministic, normalized views of a batch whose predictions test-time augmentation averages
    (:mod:`instacli.ensemble`); ``none`` is :func:`eval_view` alone, so plain prediction is its one-view case."""
    if tta not in TTA_CHOICES:
        raise InstacliError(f"unknown test-time augmentation '{tta}'; choose one of {', '.join(TTA_CHOICES)}")
    center = eval_view(images, preprocess)
    if tta == "none":
        return [center]
    crops = [center]
    if tta == "ten-crop":
        crops += [normalize(c, preprocess) for c in TF.five_crop(images, [preprocess.image_size] * 2)[:4]]
    return [view for crop in crops for view in (crop, TF.horizontal_flip(crop))]
