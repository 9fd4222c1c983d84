"""Batched image augmentation and cropping on uint8 tensors.

Images come from the decode cache as ``(B, 3, R, R)`` uint8 squares (``R = preprocess.resize_size``).
Training crops a random box of random scale and aspect per sample (RandomResizedCrop), flips half of
them and jitters brightness/contrast/saturation, all as a handful of batched tensor ops: one
``grid_sample`` call for the whole batch is several times cheaper than per-image torchvision
transforms on a 2-core CPU, and it runs on the GPU when there is one.

On top, as settings, the augmentations of ``timm.data`` (:class:`Augmentation`): an auto-augment
policy (RandAugment, TrivialAugment, AugMix, AutoAugment) on each photo before the crop, random
erasing after normalization, and mixup/cutmix of the batch with its category targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
import torchvision.transforms.v2.functional as TF

from instacli.encoders import Preprocess
from instacli.errors import InstacliError

#: Short names for timm auto-augment configurations; any other timm string (``rand-m7-n3``,
#: ``augmix-m5``, ``original``, …) is passed through. ``randaugment`` is timm's ImageNet recipe and
#: ``trivialaugment`` timm's RandAugment with one operation at a uniformly drawn magnitude, always
#: applied: TrivialAugment (Müller & Hutter, 2021). Both cap the magnitude at 9 of 10: at 10,
#: timm 1.0's increasing posterize keeps 0 bits, which Pillow ≥ 10 refuses.
AUTO_AUGMENT = {
    "randaugment": "rand-m9-mstd0.5-inc1-mmax9",
    "trivialaugment": "rand-n1-m9-mstd101-inc1-mmax9-p1.0",
}

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


def random_boxes(
    n: int,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``n`` random crop boxes of area ``scale`` and aspect ``ratio``, half of them mirrored, as
    ``(n, 2, 3)`` affine matrices in normalized coordinates (independent of the image's resolution,
    so that one box crops the same region of a photo decoded at any size)."""
    area = torch.empty(n, device=device).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_r)
    sx = torch.sqrt(area * aspect).clamp(max=1.0)  # half-width in normalized [-1, 1] coordinates
    sy = torch.sqrt(area / aspect).clamp(max=1.0)
    tx = (torch.rand(n, device=device, generator=generator) * 2 - 1) * (1 - sx)
    ty = (torch.rand(n, device=device, generator=generator) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(n, device=device, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = sx * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = ty
    return theta


def crop(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The ``boxes`` (from :func:`random_boxes`) of uint8 ``images``, resized to ``size``, as floats in [0, 1]."""
    grid = F.affine_grid(boxes.to(images.device, torch.float32), [len(images), 3, size, size], align_corners=False)
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


#: RGB → YIQ: luma Y and the two chroma axes I, Q (NTSC). Y weighs the channels as
#: ``rgb_to_grayscale`` does, so a rotation of (I, Q) changes the hue and keeps the brightness.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def hue_shift(images: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate the hue of each float ``[0, 1]`` image by its own random angle in ``±strength`` turns
    (0.5: any hue), keeping its luma and saturation.

    A rotation of the chroma plane in YIQ space is one batched 3×3 matrix per sample; torchvision's
    ``adjust_hue`` takes a single factor for the whole batch (and converts through HSV per pixel).
    """
    angle = torch.empty(len(images), device=images.device).uniform_(-strength, strength, generator=generator) * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(images), 3, 3, device=images.device)
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    yiq = _YIQ.to(images.device)
    matrix = torch.linalg.inv(yiq) @ rotation @ yiq  # per sample: RGB → YIQ → rotated → RGB
    return torch.einsum("bij,bjhw->bihw", matrix, images).clamp(0.0, 1.0)


def random_grayscale(images: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each float image turned to gray (three equal channels) with probability ``p``."""
    chosen = torch.rand(len(images), device=images.device, generator=generator) < p
    return torch.where(chosen.view(-1, 1, 1, 1), TF.rgb_to_grayscale(images, num_output_channels=3), images)


def train_view(
    images: torch.Tensor, preprocess: Preprocess, generator: torch.Generator | None = None, boxes: torch.Tensor | None = None,
    hue: float = 0.0, grayscale: float = 0.0,
) -> torch.Tensor:
    """Augmented, normalized training batch from cached uint8 squares (random crops, or the given ``boxes``),
    with optional hue rotation and random grayscale, which take colour away as a cue (a model that saw
    only green animals and blue landscapes calls a forest an animal; README: shift benchmark)."""
    if boxes is None:
        boxes = random_boxes(len(images), generator=generator, device=images.device)
    x = color_jitter(crop(images, boxes, preprocess.image_size), generator=generator)
    if hue > 0:
        x = hue_shift(x, hue, generator)
    if grayscale > 0:
        x = random_grayscale(x, grayscale, generator)
    return normalize(x, preprocess)


def eval_view(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Deterministic, normalized evaluation batch: the central crop of cached squares."""
    return normalize(center_crop(images, preprocess.image_size), preprocess)


def auto_augment_policy(name: str, preprocess: Preprocess) -> Callable[[Image.Image], Image.Image]:
    """The timm auto-augment transform (on PIL images) for ``name`` (a key of :data:`AUTO_AUGMENT` or a timm config string)."""
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

    config = AUTO_AUGMENT.get(name, name)
    hparams = {"translate_const": int(preprocess.resize_size * 0.45), "img_mean": tuple(round(255 * m) for m in preprocess.mean)}
    make = rand_augment_transform if config.startswith("rand") else augment_and_mix_transform if config.startswith("augmix") else auto_augment_transform
    try:
        return make(config, hparams)
    except (AssertionError, KeyError, ValueError, IndexError) as exc:
        raise InstacliError(
            f"--auto-augment {name}: not a timm auto-augment policy ({exc or 'bad configuration'}); "
            f"use none, {', '.join(AUTO_AUGMENT)} or a timm string such as rand-m9-mstd0.5"
        ) from None


def each_photo(images: torch.Tensor, transform: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    """Apply a PIL transform to every uint8 ``(3, H, W)`` image of a batch (the timm policies work on PIL images)."""
    out = torch.empty_like(images)
    for i, image in enumerate(images.cpu()):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        try:
            augmented = transform(pil)
        except (ValueError, TypeError) as exc:  # a policy string whose magnitudes Pillow refuses
            raise InstacliError(f"--auto-augment: the policy failed on a photo ({exc}); lower its magnitude or use randaugment") from None
        out[i] = torch.from_numpy(np.asarray(augmented, dtype=np.uint8).copy()).permute(2, 0, 1)
    return out.to(images.device)


@dataclass
class Augmentation:
    """The training view of a batch: the crop/flip/jitter above, plus the optional timm augmentations."""

    preprocess: Preprocess
    policy: Callable[[Image.Image], Image.Image] | None = None
    erasing: Callable[[torch.Tensor], torch.Tensor] | None = None
    mixup: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    hue: float = 0.0
    grayscale: float = 0.0

    @classmethod
    def create(
        cls, preprocess: Preprocess, auto_augment: str = "none", random_erasing: float = 0.0, mixup: float = 0.0,
        cutmix: float = 0.0, num_classes: int = 0, label_smoothing: float = 0.0, device: torch.device | str = "cpu",
        hue: float = 0.0, grayscale: float = 0.0,
    ) -> Augmentation:
        from timm.data import Mixup
        from timm.data.random_erasing import RandomErasing

        return cls(
            preprocess,
            policy=auto_augment_policy(auto_augment, preprocess) if auto_augment != "none" else None,
            erasing=RandomErasing(random_erasing, mode="pixel", device=str(device)) if random_erasing > 0 else None,
            mixup=Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes)
            if mixup > 0 or cutmix > 0 else None,
            hue=hue, grayscale=grayscale,
        )

    def view(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Augmented, normalized batch from cached uint8 squares (crops at ``boxes`` when given, see :func:`crop`)."""
        if self.policy is not None:
            images = each_photo(images, self.policy)
        x = train_view(images, self.preprocess, boxes=boxes, hue=self.hue, grayscale=self.grayscale)
        return self.erasing(x) if self.erasing is not None else x

    def mix(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mixup/cutmix of the batch and its soft category targets (None: not mixed, use ``labels``).

        timm mixes each photo with the batch reversed, which needs an even batch; an odd last batch,
        or one with unlabelled rows, stays unmixed.
        """
        if self.mixup is None or len(x) % 2 or (labels < 0).any():
            return x, None
        return self.mixup(x, labels)

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


