"""``timm:MODEL``: any of timm's image models by name (``timm:resnet50``, ``timm:convnext_tiny.fb_in22k``).

The embedding is timm's pooled pre-logits features (the model built with ``num_classes=0``: global
pooling, and the head's norm or hidden layer where the model has one), so every architecture fits
the heads the same way. Preprocessing (input size, mean, std, crop fraction) comes from timm's own
``resolve_model_data_config`` for the model, i.e. its pretrained weights' recipe.

Weights, per ``pretrained``: none by default (random init, never touches the network); ``true``
for timm's own pretrained weights (downloaded through timm's hub loading, or read from its cache);
or a local checkpoint file (``.safetensors``, ``.pth``) or folder of one, read offline. A trained
run stores ``pretrained=None``: reloading it builds the architecture with random weights, which the
run's own safetensors then replace, so no download happens again.

Pretrained weights for ImageNet-1k's 1000 classes (timm's own, or a checkpoint that holds the
classifier) keep that classifier, frozen, as ``imagenet_head`` (see ``linear_head``), and the prefix's recipe is
efficientnet-lite0's: a frozen probe reading the semantic prior (:mod:`instacli.semantic`), the
recipe that generalizes best to photos of new kinds (README, shift benchmark). Random weights are
trained end to end, as ``apply_recipe`` does for any encoder without pretrained weights.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated

import timm
import torch
from pydantic import Field
from timm.data import resolve_model_data_config
from timm.models import get_pretrained_cfg, load_state_dict
from torch import nn

from instacli.encoders import ImageEncoder, Preprocess
from instacli.errors import InstacliError, exception_line, unreadable_checkpoint
from instacli.registry import RANDOM_WEIGHTS, DropRate, ImageSize, register_encoder_prefix

#: Values of ``pretrained`` meaning "timm's own pretrained weights" (``-E pretrained=true`` arrives as a bool).
HUB = {"true"}
#: Classes of ImageNet-1k, whose classifier the semantic prior reads.
IMAGENET_CLASSES = 1000
#: The checkpoint read from a folder: what timm's ``save_for_hf`` and transformers' ``save_pretrained`` write.
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")


def check_model_name(model_name: str) -> None:
    """A name timm does not know is a one-line error with its closest names and how to list them all."""
    if timm.is_model(model_name):
        return
    close = difflib.get_close_matches(model_name.split(".")[0], timm.list_models(), n=4)
    pattern = f"*{re.match(r'[a-z]*', model_name.lower()).group()}*"  # resnet9000 → *resnet*
    hint = f" (closest: {', '.join(close)})" if close else ""
    raise InstacliError(
        f"timm has no model '{model_name}'{hint}; list the names with "
        f"python -c \"import timm; print(timm.list_models('{pattern}'))\""
    )


def load_checkpoint(model: nn.Module, model_name: str, path: Path) -> bool:
    """Load a local checkpoint (a file, or a folder holding one) into ``model`` strictly: every
    tensor of the network must be there; a classifier may be missing, or extra (another number of
    classes). Returns whether ``model``'s own classifier was loaded."""
    if path.is_dir():
        path = next((path / name for name in FOLDER_FILES if (path / name).is_file()), path / FOLDER_FILES[0])
    if not path.is_file():
        raise InstacliError(
            f"timm:{model_name}: pretrained checkpoint {path} {'is not a regular file' if path.exists() else 'does not exist'}; "
            f"pass a .safetensors/.pth file or a folder holding "
            f"{' or '.join(FOLDER_FILES)}, or true for timm's own pretrained weights"
        )
    try:
        state = load_state_dict(str(path))
    except Exception as exc:  # noqa: BLE001 — pickle, zip and safetensors errors alike: not a usable state dict
        raise InstacliError(f"timm:{model_name}: {unreadable_checkpoint(path, exc)}; pass a .safetensors/.pth state dict saved from "
                            f"{model_name}, or true for timm's own pretrained weights") from None
    classifier = model.pretrained_cfg.get("classifier") or ()
    heads = tuple(f"{head}." for head in ((classifier,) if isinstance(classifier, str) else classifier))
    own = model.state_dict()
    state = {key: value for key, value in state.items() if not (key.startswith(heads) and key in own and value.shape != own[key].shape)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), exception_line(exc))
        raise InstacliError(f"timm:{model_name}: {path} does not fit this model ({detail}); pass a checkpoint of {model_name}") from None
    head_missing = [key for key in missing if key.startswith(heads)]
    missing = [key for key in missing if not key.startswith(heads)]
    unexpected = [key for key in unexpected if not key.startswith(heads)]
    if missing or unexpected:
        raise InstacliError(
            f"timm:{model_name}: {path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            f"pass a checkpoint of {model_name}"
        )
    return bool(heads) and not head_missing and any(key.startswith(heads) for key in own)


def build_network(
    model_name: str, pretrained: bool | str | None, image_size: int | None, drop_path: float, imagenet_head: bool = False,
) -> tuple[nn.Module, nn.Module | None]:
    """timm's ``model_name`` without classifier, weights per ``pretrained`` (see the module docstring),
    and its ImageNet-1k classifier where those weights have one (or, rebuilt from a run, ``imagenet_head``).

    Models with a fixed input size (ViTs: position embeddings) are built for ``image_size``; timm
    resamples pretrained position embeddings to it. Convolutional ones take any size as they are.
    """
    check_model_name(model_name)
    choice = str(pretrained).lower() if pretrained is not None else "none"
    kwargs = {"drop_path_rate": drop_path} if drop_path else {}
    cfg = get_pretrained_cfg(model_name)
    if image_size is not None and cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = image_size
    imagenet = cfg is not None and cfg.num_classes == IMAGENET_CLASSES and (imagenet_head or choice not in RANDOM_WEIGHTS)
    try:
        model = timm.create_model(model_name, pretrained=choice in HUB, num_classes=IMAGENET_CLASSES if imagenet else 0, **kwargs)
    except TypeError as exc:  # e.g. a model without stochastic depth given drop_path
        raise InstacliError(f"timm:{model_name}: {exception_line(exc)}; leave that option out for this model") from None
    except (OSError, RuntimeError) as exc:  # offline, not cached, or no pretrained weights for this name
        raise InstacliError(
            f"timm:{model_name}: cannot load timm's pretrained weights ({exception_line(exc)}); they need the network once "
            "(or a filled Hugging Face cache): go online, or pass --pretrained a local checkpoint, or leave --pretrained out for random weights"
        ) from None
    if choice not in HUB | RANDOM_WEIGHTS:
        imagenet = load_checkpoint(model, model_name, Path(str(pretrained)).expanduser()) and imagenet
    if not imagenet:
        return model, None
    head = linear_head(model.get_classifier())
    model.reset_classifier(0)  # the network now gives its pooled pre-logits features, which ``head`` maps to logits
    return model, head.requires_grad_(False) if head is not None and head.in_features == pooled_width(model) else None


def pooled_width(net: nn.Module) -> int:
    """The width of a classifier-less timm model's output: after the head's hidden layer where the model
    has one (MobileNetV3), else its last features'."""
    return int(getattr(net, "head_hidden_size", None) or net.num_features)


def linear_head(classifier: object) -> nn.Linear | None:
    """``classifier`` as a Linear map of the pooled features to the logits, or None where it is none.

    DLA's and ResNetV2's (BiT) classifier is a 1×1 convolution, which the ``(B, D)`` embedding cannot
    enter: it becomes the Linear it computes. Anything else is no head here: distilled models have two
    (a tuple), and a head with batch norm (RepViT's, LeViT's) would use the batch's statistics, and
    change its own, whenever the encoder trains.
    """
    if isinstance(classifier, nn.Conv2d) and classifier.kernel_size == (1, 1) and classifier.groups == 1:
        linear = nn.Linear(classifier.in_channels, classifier.out_channels, bias=classifier.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(classifier.weight.flatten(1))
            if classifier.bias is not None:
                linear.bias.copy_(classifier.bias)
        return linear
    return classifier if isinstance(classifier, nn.Linear) and classifier.out_features == IMAGENET_CLASSES else None


class TimmEncoder(ImageEncoder):
    """A timm model without classifier: pixels → pooled pre-logits features."""

    def __init__(self, net: nn.Module, preprocess: Preprocess, imagenet_head: nn.Module | None) -> None:
        super().__init__()
        self.net = net
        self.preprocess = preprocess
        self.imagenet_head = imagenet_head
        self.embed_dim = pooled_width(net)

    def cam_layer(self) -> tuple[nn.Module, int] | None:
        """The last stage timm lists in the model's ``feature_info``: feature maps ``(B, C, H, W)`` of a
        conv net, or a ViT's tokens with its ``num_prefix_tokens`` (class, distillation, register) first
        (the tokens entering its last block when the class token is the embedding).
        None for channels-last models (Swin, MambaOut: ``output_fmt`` NHWC), which Grad-CAM would misread."""
        info = getattr(self.net, "feature_info", None)
        if not info or getattr(self.net, "output_fmt", "NCHW") != "NCHW":
            return None
        module, prefix = self.net.get_submodule(info[-1]["module"]), int(getattr(self.net, "num_prefix_tokens", 0))
        if prefix and getattr(self.net, "global_pool", None) == "token" and isinstance(getattr(module, "norm1", None), nn.Module):
            module = module.norm1  # the embedding is the class token: after the last block's attention no patch reaches it
        return module, prefix

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels)


@register_encoder_prefix(
    "timm",
    description="any timm model by name, e.g. timm:resnet50 (names: timm.list_models('*pattern*'))",
    pretrained="none by default; true: timm's own (downloads once); or a local checkpoint",
    recipe={"freeze_encoder": True, "semantic_prior": "grouped"},  # for pretrained weights; random ones are trained
)
def timm_encoder(
    model_name: str,
    /,
    *,
    pretrained: bool | str | None = None,
    image_size: ImageSize | None = None,
    drop_path: DropRate = 0.0,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    crop_pct: Annotated[float, Field(gt=0, le=1)] | None = None,
    imagenet_head: bool = False,
) -> TimmEncoder:
    """timm model ``model_name`` (a ``.tag`` picks its pretrained weights); preprocessing from timm's
    data config unless given. ``image_size`` defaults to the model's pretrained input size.
    ``imagenet_head`` is set by a trained run whose weights hold the ImageNet classifier."""
    net, head = build_network(model_name, pretrained, image_size, drop_path, imagenet_head)
    data = resolve_model_data_config(net)
    preprocess = Preprocess(
        image_size=image_size or int(data["input_size"][-1]),
        mean=tuple(mean or data["mean"]), std=tuple(std or data["std"]), crop_pct=crop_pct or float(data["crop_pct"]),
    )
    encoder = TimmEncoder(net, preprocess, head)
    encoder.saved_options = dict(
        pretrained=None, image_size=preprocess.image_size, drop_path=drop_path,
        mean=list(preprocess.mean), std=list(preprocess.std), crop_pct=preprocess.crop_pct, imagenet_head=head is not None,
    )
    return encoder
