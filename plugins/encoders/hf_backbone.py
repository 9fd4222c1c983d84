"""``hf:ID_OR_FOLDER``: a Hugging Face transformers image backbone (``AutoModel``) by hub id or local folder.

``hf:facebook/dinov2-small``, ``hf:facebook/convnext-tiny-224``, ``hf:microsoft/resnet-50``,
``hf:google/vit-base-patch16-224`` or ``hf:/path/to/folder`` written by ``save_pretrained``. The
checkpoint's ``AutoImageProcessor`` (saved beside its weights) gives the input size, mean, std and
crop fraction the weights were trained with; without one, ImageNet's statistics at the config's size.

The embedding (``pooling="auto"``), decided once when the backbone is built and stored with the run:

* ``cls`` (the first token after the final layer norm) when the model's ``pooler`` holds a Linear
  layer: ViT's and DeiT's dense + tanh pooler is an extra layer that many checkpoints never trained,
  and transformers' own ``ViTForImageClassification`` classifies from this token, not the pooler;
* else ``pooler`` (``pooler_output``) when the model has one: there it *is* the backbone's own
  pooling — ConvNeXt's layer-normed global average, ResNet's average pool, DINOv2's normed CLS
  token, Swin's token average;
* else ``mean``: the average of the last feature map or tokens.

A trained run stores the model's full config dict and the resolved preprocessing as its options:
reloading it builds the architecture from that config with random weights, offline, and the run's
safetensors fill it (nothing is downloaded again). transformers is imported only when a model is
built: it is the slowest import in the project and listing the registry must not pay for it.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from instacli.encoders import ImageEncoder, Preprocess
from instacli.errors import InstacliError, exception_line
from instacli.registry import ImageSize, register_encoder_prefix

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Pooling = Literal["auto", "cls", "pooler", "mean"]
#: Input side when neither the processor nor the config says one.
DEFAULT_SIZE = 224
#: ConvNextImageProcessor crops (by ``crop_pct``) only below this size; at or above it it resizes to the size.
CONVNEXT_NO_CROP_FROM = 384


def is_local(source: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything that exists or looks like a path is a folder."""
    return Path(source).expanduser().exists() or source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def load_error(who: str, source: str, exc: Exception, what: str, local_fix: str) -> InstacliError:
    """transformers' multi-line loading error about ``source`` as one line that says how to fix it;
    ``what`` names the folder it should have been, ``local_fix`` says how to pass a local folder."""
    from huggingface_hub import is_offline_mode

    reason = exception_line(exc)
    if is_local(source):
        if not Path(source).expanduser().exists():
            return InstacliError(f"{who}: pretrained folder {source} does not exist; {local_fix}, or a hub id")
        return InstacliError(f"{who}: {source} is not {what} ({reason}); it needs config.json and model.safetensors from save_pretrained")
    if is_offline_mode():
        return InstacliError(
            f"{who}: '{source}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set; it needs the network once: "
            f"run online (or `hf download {source}`) to cache it, or {local_fix}"
        )
    return InstacliError(f"{who}: cannot load '{source}' from the Hugging Face Hub ({reason}); check the id and your connection, or {local_fix}")


def processor_settings(source: str) -> Preprocess | None:
    """The input size, mean, std and crop fraction of ``source``'s image processor; None when it has none.

    Processors that resize the short side and then center-crop (DINOv2's ``BitImageProcessor``:
    256 → 224) give ``crop_pct = crop / resize``; ConvNeXt's (and ResNet's) say ``crop_pct`` itself;
    ViT's resize straight to the size, which is ``crop_pct = 1`` (a center square, not a warp, here).
    """
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):  # no preprocessor_config.json: the weights still load
        return None
    size = processor.size
    resize = int(size.get("shortest_edge") or size.get("height") or DEFAULT_SIZE)
    crop = getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and crop and crop.get("height"):
        image_size, crop_pct = int(crop["height"]), int(crop["height"]) / resize
    elif getattr(processor, "crop_pct", None) and resize < CONVNEXT_NO_CROP_FROM:
        image_size, crop_pct = resize, float(processor.crop_pct)
    else:
        image_size, crop_pct = resize, 1.0
    return Preprocess(image_size, tuple(processor.image_mean), tuple(processor.image_std), min(crop_pct, 1.0))


def _build_model(source: str, config: dict[str, Any] | None) -> PreTrainedModel:
    """``AutoModel.from_pretrained(source)``, or a randomly initialized one from a saved ``config`` (no download)."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging

    logging.disable_progress_bar()
    who = f"hf:{source}"
    if config is None:
        try:
            return AutoModel.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise load_error(who, source, exc, "a transformers model folder", "pass hf:/path/to/folder written by save_pretrained") from None
    settings = dict(config)
    try:
        return AutoModel.from_config(AutoConfig.for_model(settings.pop("model_type", ""), **settings))
    except (ValueError, TypeError, KeyError, StrictDataclassError) as exc:
        raise InstacliError(f"{who}: invalid model config ({exception_line(exc)})") from None  # load_run names the file and the fix


def _pool(output: Any, pooling: str) -> torch.Tensor:
    """The ``(B, D)`` embedding of a model output by ``pooling`` (``auto`` is resolved before)."""
    if pooling == "pooler":
        return output.pooler_output.flatten(1)
    hidden = output.last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(dim=1)


def _auto_pooling(model: nn.Module, output: Any) -> str:
    """The module docstring's rule: CLS beside a Linear pooler, else the model's own pooler, else the mean."""
    pooler = getattr(model, "pooler", None)
    if isinstance(pooler, nn.Module) and any(isinstance(m, nn.Linear) for m in pooler.modules()):
        return "cls"
    return "pooler" if getattr(output, "pooler_output", None) is not None else "mean"


class HFBackbone(ImageEncoder):
    """transformers image model → pooled embedding (see the module docstring for the pooling)."""

    def __init__(self, model: PreTrainedModel, pooling: str, preprocess: Preprocess, who: str) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        accepts = inspect.signature(model.forward).parameters
        if "pixel_values" not in accepts:
            raise InstacliError(f"{who}: {type(model).__name__} takes no images (no pixel_values input); give an image backbone such as a ViT, ConvNeXt or DINOv2")
        # ViTs interpolate their position embeddings when the photos differ from the config's size (only
        # then: the interpolation is an operator more in every forward, and in an exported graph)
        resized = preprocess.image_size != getattr(model.config, "image_size", preprocess.image_size)
        self.extra = {"interpolate_pos_encoding": True} if resized and "interpolate_pos_encoding" in accepts else {}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                probe = model(pixel_values=torch.zeros(1, 3, preprocess.image_size, preprocess.image_size), **self.extra)
        except Exception as exc:  # noqa: BLE001 — whatever the model refuses (a text+image model wants input_ids too)
            raise InstacliError(f"{who}: {type(model).__name__} cannot embed a {preprocess.image_size}px image ({exception_line(exc)}); give an image backbone") from None
        model.train(was_training)
        self.pooling = _auto_pooling(model, probe) if pooling == "auto" else pooling
        if self.pooling == "pooler" and getattr(probe, "pooler_output", None) is None:
            raise InstacliError(f"{who}: {type(model).__name__} has no pooler output; pass -E pooling=cls or -E pooling=mean")
        if self.pooling == "cls" and probe.last_hidden_state.ndim != 3:
            raise InstacliError(f"{who}: {type(model).__name__} outputs feature maps, not tokens, so it has no CLS token; pass -E pooling=mean")
        if self.pooling != "pooler" and isinstance(getattr(model, "pooler", None), nn.Module):
            model.pooler.requires_grad_(False)  # unused: no optimizer step, and no DDP "unused parameter" error
        self.embed_dim = int(_pool(probe, self.pooling).shape[1])

    def cam_layer(self) -> tuple[nn.Module, int] | None:
        """The last module whose output has the shape of the model's ``last_hidden_state`` (feature maps
        ``(B, C, H, W)``, or tokens: class/register tokens, then a square grid of patches) and whose
        patches reach the embedding, found by one forward and backward with every module hooked
        (transformers names them differently per family). With CLS pooling that is inside the last
        layer, before its attention mixes the tokens (its value projection, the last of query, key and
        value to run): after the mixing the patch tokens no longer reach the class token, and Grad-CAM
        there would be all zero. The gradients are taken for those outputs only (``autograd.grad``), so
        no parameter's ``.grad`` is touched. None when no module gives such a plain tensor."""
        size = self.preprocess.image_size
        generator = torch.Generator().manual_seed(0)
        device = next(self.model.parameters()).device
        pixels = torch.randn(1, 3, size, size, generator=generator).to(device).requires_grad_(True)  # gradients even when frozen
        seen: list[tuple[nn.Module, torch.Tensor]] = []
        handles = [module.register_forward_hook(lambda m, _in, out: seen.append((m, out)) if isinstance(out, torch.Tensor) else None)
                   for module in self.model.modules() if module is not self.model]
        was_training = self.model.training
        try:
            output = self.model.eval()(pixel_values=pixels, **self.extra)
        finally:
            self.model.train(was_training)
            for handle in handles:
                handle.remove()
        shape = output.last_hidden_state.shape
        prefix = shape[1] - math.isqrt(shape[1]) ** 2 if len(shape) == 3 else 0
        candidates = [(module, out) for module, out in seen if out.shape == shape and out.requires_grad]
        embedding = _pool(output, self.pooling)  # a random direction of it: the sum of a normed vector has no gradient
        grads = torch.autograd.grad((embedding * torch.randn(embedding.shape, generator=generator).to(device)).sum(), [out for _, out in candidates], allow_unused=True)
        reached = [module for (module, _), grad in zip(candidates, grads) if grad is not None and grad[:, prefix:].abs().sum() > 0]
        return (reached[-1], prefix) if reached else None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return _pool(self.model(pixel_values=pixels, **self.extra), self.pooling)


@register_encoder_prefix(
    "hf",
    description="a transformers image backbone by hub id or local folder, e.g. hf:facebook/dinov2-small",
    pretrained="the checkpoint named (hub: downloads once; or a save_pretrained folder)",
)
def hf_backbone(
    source: str,
    /,
    *,
    config: dict[str, Any] | None = None,
    pooling: Pooling = "auto",
    image_size: ImageSize | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    crop_pct: Annotated[float, Field(gt=0, le=1)] | None = None,
) -> HFBackbone:
    """transformers ``AutoModel`` ``source`` with its image processor's preprocessing (options override it).

    ``config`` (what a run stores) builds the architecture with random weights instead of loading ``source``.
    """
    model = _build_model(source, config)
    model_size = getattr(model.config, "image_size", None)
    # without a processor: ImageNet's statistics (Preprocess's defaults) at the config's size
    default = (processor_settings(source) if config is None else None) or Preprocess(model_size if isinstance(model_size, int) else DEFAULT_SIZE)
    preprocess = Preprocess(
        image_size=image_size or default.image_size, mean=tuple(mean or default.mean), std=tuple(std or default.std),
        crop_pct=crop_pct or default.crop_pct,
    )
    encoder = HFBackbone(model, pooling, preprocess, f"hf:{source}")
    encoder.saved_options = dict(
        config=model.config.to_dict(), pooling=encoder.pooling, image_size=preprocess.image_size,
        mean=list(preprocess.mean), std=list(preprocess.std), crop_pct=preprocess.crop_pct,
    )
    return encoder
