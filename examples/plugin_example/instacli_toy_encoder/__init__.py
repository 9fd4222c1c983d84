"""A toy image encoder that instacli discovers through the ``instacli.encoders`` entry point.

It shows the whole contract of an encoder plugin: an :class:`~instacli.encoders.ImageEncoder` with
``embed_dim`` and ``preprocess``, a factory taking keyword options, and ``saved_options`` from which
a trained run rebuilds the same architecture later.
"""

from __future__ import annotations

import torch
from torch import nn

from instacli.encoders import ImageEncoder, Preprocess


class ToyCNN(ImageEncoder):
    """Two stride-2 convolutions → global average pool → ``2 * width`` features."""

    def __init__(self, width: int, image_size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.embed_dim = 2 * width
        self.preprocess = Preprocess(image_size=image_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(pixels)


def toy_cnn(*, width: int = 16, image_size: int = 64) -> ToyCNN:
    """A two-convolution CNN: the smallest encoder that shows how a plugin plugs in."""
    encoder = ToyCNN(width=width, image_size=image_size)
    encoder.saved_options = dict(width=width, image_size=image_size)
    return encoder
