"""What every image encoder provides, so that train, evaluate and predict treat all of them alike.

An encoder is an ``nn.Module`` mapping a batch of normalized images ``(B, 3, S, S)`` to embeddings
``(B, embed_dim)``. It carries its own :class:`Preprocess`, because a fair comparison needs each
encoder fed the way it was designed (Inception-v3 wants 299 px, an HF checkpoint brings its own
normalization).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an encoder wants its pixels.

    Images are resized so the shorter side is ``resize_size`` and center-cropped to a square of that
    size once (the decode cache); training then takes random crops of ``image_size`` from it and
    evaluation the center crop. ``crop_pct`` follows timm: ``resize_size = image_size / crop_pct``.
    """

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875

    @property
    def resize_size(self) -> int:
        return int(round(self.image_size / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageEncoder(nn.Module):
    """Base class of image encoders.

    Subclasses set ``embed_dim`` and ``preprocess`` and implement ``forward(pixels) -> (B, embed_dim)``.
    ``saved_options`` is what the run stores to rebuild the same architecture later *without*
    downloading anything (the weights come from the run's ``model.safetensors``); factories must
    accept these options back.
    """

    embed_dim: int
    preprocess: Preprocess

    def __init__(self) -> None:
        super().__init__()
        self.saved_options: dict[str, Any] = {}
        #: ``embedding → 1000 ImageNet logits`` for encoders pretrained on ImageNet classification,
        #: frozen; the category head's semantic prior reads it (:mod:`instacli.semantic`). ``None``
        #: for encoders without one.
        self.imagenet_head: nn.Module | None = None

    def cam_layer(self) -> tuple[nn.Module, int] | None:
        """Where Grad-CAM reads this encoder (:mod:`instacli.explain`): the last module whose output still
        has a place for each part of the photo, before pooling throws it away, with ``prefix``. Its
        output is either feature maps ``(B, C, H, W)`` (``prefix`` 0) or tokens ``(B, N, C)`` whose first
        ``prefix`` are no patches (a class token) and the rest a square grid. None: not said, so
        ``explain`` cannot show where this encoder's category came from."""
        return None

    def auxiliary_loss(self) -> Any:
        """Extra training loss the encoder produced in its last forward (e.g. Inception's aux head)."""
        return None
