"""``mlp``: hidden layers over ``[LayerNorm(embedding) ⊕ numeric features]``.

Unlike conv1d, which first squeezes the few numbers through a convolution, the MLP lets its first
layer weigh image and numbers jointly, so interactions (a landscape photo from a big account) are
learned directly; dropout after each hidden layer keeps it from memorising small datasets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pydantic import NonNegativeInt

from instacli.registry import Count, DropRate, register_regressor
from instacli.regressors import LikesRegressor
from instacli_plugins.regressors.fusion import LateFusion


class MLPRegressor(LikesRegressor):
    """LateFusion → (Linear → GELU → Dropout) per hidden width → Linear → standardized log1p(likes)."""

    def __init__(
        self, embed_dim: int, num_features: int, hidden: Sequence[int], dropout: float, image_dim: int = 64, image_dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.fusion = LateFusion(embed_dim, num_features, image_dim=image_dim, image_dropout=image_dropout)
        layers: list[nn.Module] = []
        width = self.fusion.out_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.GELU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*layers)

    def forward(self, embedding: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.fusion(embedding, features)).squeeze(1)


@register_regressor("mlp")
def mlp(
    *,
    embed_dim: int,
    num_features: int,
    hidden: Count | Sequence[Count] = (256, 64),
    dropout: DropRate = 0.2,
    image_dim: NonNegativeInt = 64,
    image_dropout: DropRate = 0.5,
) -> MLPRegressor:
    """Hidden layers with dropout over [LayerNorm(embedding) ⊕ numbers].

    ``hidden`` lists the widths (one int: a single layer); the default suits embeddings of 128-2048.
    """
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    return MLPRegressor(embed_dim, num_features, widths, dropout, image_dim, image_dropout)
