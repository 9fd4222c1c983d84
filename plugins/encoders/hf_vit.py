"""``hf-vit``: a Hugging Face transformers ``ViTModel``, pretrained or built from a config.

``pretrained`` takes a hub id (``google/vit-base-patch16-224-in21k``, for online users or a filled
Hugging Face cache) or a local folder written by ``save_pretrained``; the checkpoint's image
processor, when it has one, supplies the mean, std and image size the weights were trained with.
Without ``pretrained`` a small ViT is built from the size options, which suits a CPU.

A trained run stores the full ``ViTConfig`` dict and ``pretrained=None`` as its options, so loading
it rebuilds the architecture offline and then takes the weights from the run's safetensors.

transformers is imported only when a model is built: it is the slowest import in the project and
listing the registry must not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import torch
from torch import nn
from pydantic import Field

from instacli.encoders import ImageEncoder, Preprocess
from instacli.errors import InstacliError
from instacli.registry import Count, ImageSize, register_encoder
from instacli_plugins.encoders.hf_backbone import load_error, processor_settings

if TYPE_CHECKING:
    from transformers import ViTModel

#: ViTImageProcessor's defaults, for checkpoints that come without an image processor.
VIT_MEAN = (0.5, 0.5, 0.5)
VIT_STD = (0.5, 0.5, 0.5)
POOLINGS = ("cls", "pooler")


class HFViT(ImageEncoder):
    """ViTModel → CLS token after the final layer norm (``cls``) or the tanh pooler on it (``pooler``)."""

    def __init__(self, vit: ViTModel, pooling: str, preprocess: Preprocess) -> None:
        super().__init__()
        self.vit = vit
        self.pooling = pooling
        self.preprocess = preprocess
        self.embed_dim = vit.config.pooler_output_size if pooling == "pooler" else vit.config.hidden_size
        # Position embeddings are interpolated only when the images differ from the checkpoint's size.
        self.interpolate = preprocess.image_size != vit.config.image_size

    def cam_layer(self) -> tuple[nn.Module, int]:
        """The patch tokens before attention mixes them (no class token among them yet), as vit-scratch's
        (see there why: later tokens have the photo's class everywhere)."""
        return self.vit.embeddings.patch_embeddings, 0

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.vit(pixel_values=pixels, interpolate_pos_encoding=self.interpolate)
        return out.pooler_output if self.pooling == "pooler" else out.last_hidden_state[:, 0]


def _build_vit(pretrained: str | None, config: dict[str, Any], pooling: str) -> ViTModel:
    """``from_pretrained`` for a checkpoint, else a randomly initialized ViTModel from ``config``."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import ViTConfig, ViTModel

    add_pooling_layer = pooling == "pooler"
    if pretrained is not None:
        try:
            return ViTModel.from_pretrained(pretrained, add_pooling_layer=add_pooling_layer)
        except (OSError, ValueError) as exc:
            raise load_error("hf-vit", pretrained, exc, "a ViT checkpoint folder", "pass --pretrained a local folder written by save_pretrained") from None
    try:
        return ViTModel(ViTConfig.from_dict(config), add_pooling_layer=add_pooling_layer)
    except (ValueError, TypeError, StrictDataclassError) as exc:
        raise InstacliError(f"hf-vit: invalid ViT config ({str(exc).strip().splitlines()[0]}); fix the size options") from None


@register_encoder(
    "hf-vit",
    description="transformers ViTModel: hub checkpoint, local folder, or a small one from scratch",
    pretrained="HF hub id or local folder",
    input_size=64,
)
def hf_vit(
    *,
    pretrained: str | None = None,
    config: dict[str, Any] | None = None,
    image_size: ImageSize | None = None,
    patch_size: Count = 8,
    hidden_size: Count = 192,
    num_hidden_layers: Count = 4,
    num_attention_heads: Count = 3,
    intermediate_size: Count = 768,
    pooling: str = "cls",
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    crop_pct: Annotated[float, Field(gt=0, le=1)] = 0.875,
) -> HFViT:
    """transformers ViT; ``pretrained`` wins over ``config``, which wins over the size options.

    ``image_size`` defaults to the checkpoint's (64 from scratch); another size interpolates the
    position embeddings. ``mean``/``std`` default to the checkpoint's image processor.
    """
    if pooling not in POOLINGS:
        raise InstacliError(f"hf-vit: pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}; pass -E pooling=cls")
    if pretrained is None and config is None:
        config = dict(
            image_size=image_size or 64, patch_size=patch_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
        )
    vit = _build_vit(pretrained, config or {}, pooling)
    # a checkpoint's image processor, else ViTImageProcessor's defaults (the weights still load without one)
    default = (processor_settings(pretrained) if pretrained is not None else None) or Preprocess(vit.config.image_size, VIT_MEAN, VIT_STD)
    preprocess = Preprocess(
        image_size=image_size or default.image_size, mean=tuple(mean or default.mean), std=tuple(std or default.std), crop_pct=crop_pct
    )
    encoder = HFViT(vit, pooling, preprocess)
    encoder.saved_options = dict(
        pretrained=None, config=vit.config.to_dict(), image_size=preprocess.image_size, pooling=pooling,
        mean=list(preprocess.mean), std=list(preprocess.std), crop_pct=crop_pct,
    )
    return encoder
