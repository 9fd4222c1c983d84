"""``conv1d``: the original design's likes regressor, kept as the reference.

The numeric features (log1p-scaled and standardized by the trainer) are treated as a 1-channel
sequence: a 1-D convolution, a dense layer, batch norm and dropout turn them into a small vector
that is concatenated with the image embedding (late fusion) before a linear output.
"""

from __future__ import annotations

import torch
from torch import nn

from pydantic import NonNegativeInt

from instacli.registry import Count, DropRate, register_regressor
from instacli.regressors import LikesRegressor
from instacli_plugins.regressors.fusion import LateFusion


class Conv1dRegressor(LikesRegressor):
    """Conv1d over numeric features ⊕ image embedding → standardized log1p(likes)."""

    def __init__(
        self, embed_dim: int, num_features: int, channels: int, hidden: int, dropout: float, image_dim: int, image_dropout: float
    ) -> None:
        super().__init__()
        numeric: nn.Module | None = None
        if num_features > 0:
            numeric = nn.Sequential(
                nn.Unflatten(1, (1, num_features)),
                nn.Conv1d(1, channels, kernel_size=3, padding=1),
                nn.GELU(),
                nn.Flatten(),
                nn.Linear(channels * num_features, hidden),
                nn.BatchNorm1d(hidden),
                nn.GELU(),
                nn.Dropout(dropout),
            )
        self.fusion = LateFusion(embed_dim, num_features, numeric, hidden, image_dim, image_dropout)
        self.out = nn.Linear(self.fusion.out_dim, 1)

    def forward(self, embedding: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.fusion(embedding, features)).squeeze(1)


@register_regressor("conv1d")
def conv1d(
    *,
    embed_dim: int,
    num_features: int,
    channels: Count = 16,
    hidden: Count = 64,
    dropout: DropRate = 0.2,
    image_dim: NonNegativeInt = 64,
    image_dropout: DropRate = 0.5,
) -> Conv1dRegressor:
    """Reference regressor of the original design: Conv1d + dense + batch norm on the numbers, fused with the image."""
    return Conv1dRegressor(embed_dim, num_features, channels, hidden, dropout, image_dim, image_dropout)
