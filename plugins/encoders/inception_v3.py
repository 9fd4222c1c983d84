"""``inception-v3``: torchvision's Inception-v3 at 299 px, its 2048-d pooled features as the embedding.

The auxiliary classifier is dropped (``aux_logits=False``). It predicts the 1000 ImageNet classes,
not our categories, and our category head on the embedding already sends gradient through the
whole trunk; keeping it would add ≈3.3M weights and an extra head's compute per step for no gain
on small datasets. Its ``AuxLogits.*`` keys are therefore skipped when pretrained weights load, as
are the ImageNet classifier's ``fc.*`` keys.

``transform_input`` stays on: torchvision's ImageNet weights were ported from TensorFlow and expect
pixels in [-1, 1]; the network converts ImageNet-normalized input itself, so this encoder's
preprocessing is the usual ImageNet mean/std like every other torchvision model.

Random weights use PyTorch's default initialization rather than torchvision's truncated normal:
every convolution is followed by batch norm, so the scale hardly matters, and the truncated normal
costs seconds on every build (including each rebuild of a trained run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from huggingface_hub import is_offline_mode
from pydantic import Field
from safetensors.torch import load_file
from torch import nn
from torchvision.models import Inception_V3_Weights, inception_v3 as tv_inception_v3

from instacli.encoders import IMAGENET_MEAN, IMAGENET_STD, ImageEncoder, Preprocess
from instacli.errors import InstacliError, unreadable_checkpoint
from instacli.registry import MAX_IMAGE_SIZE, DropRate, register_encoder

IMAGE_SIZE = 299
#: The smallest input Inception-v3's stride-2 stem and pooling layers leave a feature map for.
MIN_IMAGE_SIZE = 75
EMBED_DIM = 2048
#: Heads of torchvision's checkpoint that this encoder does not have.
SKIPPED_PREFIXES = ("AuxLogits.", "fc.")


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights: from the torch hub cache, or downloaded once when online."""
    weights = Inception_V3_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    how_to_fix = (
        f"download {weights.url} into {cached.parent} on a machine with internet, "
        "or pass --pretrained PATH to a local torchvision state dict"
    )
    if not cached.is_file() and is_offline_mode():
        raise InstacliError(f"inception-v3: ImageNet weights are not cached at {cached} and HF_HUB_OFFLINE is set; {how_to_fix}")
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (URLError, OSError, RuntimeError) as exc:  # no connection, disk trouble, hash mismatch
        raise InstacliError(f"inception-v3: cannot get torchvision's ImageNet weights ({exc}); {how_to_fix}") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision Inception-v3 state dict from a ``.pth``/``.pt`` (tensors only) or ``.safetensors`` file."""
    if not path.is_file():
        what = "is a folder, not a state dict file" if path.is_dir() else "do not exist"
        raise InstacliError(f"inception-v3: pretrained weights {path} {what}; pass an existing state dict file or --pretrained imagenet")
    try:
        return load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors all mean "not a usable state dict"
        raise InstacliError(f"inception-v3: {unreadable_checkpoint(path, exc)}; save one with torch.save(model.state_dict(), path)") from None


class InceptionV3(ImageEncoder):
    """Inception-v3 trunk → global average pool → 2048-d embedding (no auxiliary head, no classifier)."""

    def __init__(self, image_size: int, dropout: float) -> None:
        super().__init__()
        self.net = tv_inception_v3(weights=None, aux_logits=False, transform_input=True, init_weights=False, dropout=dropout)
        self.net.fc = nn.Identity()
        self.embed_dim = EMBED_DIM
        self.preprocess = Preprocess(image_size=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875)

    def load_torchvision_state_dict(self, state: dict[str, torch.Tensor], origin: str) -> None:
        """Load a torchvision checkpoint's trunk; every trunk tensor must be there and fit."""
        trunk = {k: v for k, v in state.items() if not k.startswith(SKIPPED_PREFIXES)}
        try:
            missing, unexpected = self.net.load_state_dict(trunk, strict=False)
        except RuntimeError as exc:  # shape mismatches
            reason = str(exc).splitlines()[-1].strip()
            raise InstacliError(f"inception-v3: {origin} does not fit Inception-v3 ({reason}); pass a torchvision inception_v3 state dict") from None
        if missing or unexpected:
            raise InstacliError(
                f"inception-v3: {origin} is not a torchvision inception_v3 state dict "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]}); save one with torch.save(model.state_dict(), path)"
            )

    def cam_layer(self) -> tuple[nn.Module, int]:
        """The last inception block's maps: 8×8 at 299 px (1×1 below 107 px, where the heatmap says nothing)."""
        return self.net.Mixed_7c, 0

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels)


@register_encoder(
    "inception-v3",
    description="torchvision Inception-v3 at 299 px, auxiliary head dropped",
    pretrained="imagenet (torchvision download) or local file",
    input_size=IMAGE_SIZE,
)
def inception_v3(
    *, pretrained: str | None = None, image_size: Annotated[int, Field(ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)] = IMAGE_SIZE, dropout: DropRate = 0.0
) -> InceptionV3:
    """Inception-v3; ``pretrained`` is ``"imagenet"``, a path to a torchvision state dict, or None/"none" (random).

    ``dropout`` acts on the embedding; it defaults to 0 because the heads have their own dropout.
    """
    encoder = InceptionV3(image_size=image_size, dropout=dropout)
    if pretrained == "imagenet":
        encoder.load_torchvision_state_dict(imagenet_state_dict(), "torchvision's ImageNet checkpoint")
    elif pretrained is not None and pretrained.lower() != "none":
        path = Path(pretrained).expanduser()
        encoder.load_torchvision_state_dict(read_state_dict(path), str(path))
    encoder.saved_options = dict(pretrained=None, image_size=image_size, dropout=dropout)
    return encoder
