"""The input every built-in likes regressor reads: ``[LayerNorm(embedding) ⊕ numbers]``.

Embeddings differ wildly in scale from one encoder to the next (a ViT's layer-normed class token,
Inception's averaged ReLU activations, EfficientNet's 1280 pooled features). Normalizing the
embedding puts every encoder on the same footing as the numeric features, which the trainer has
already standardized, so one regressor and one learning rate suit them all.
"""

from __future__ import annotations

import torch
from torch import nn


class LateFusion(nn.Module):
    """``(B, D)`` embedding and ``(B, F)`` features → ``(B, out_dim)``.

    ``numeric`` optionally maps the features to ``numeric_dim`` values first (conv1d does);
    without it they are concatenated as they are.
    """

    def __init__(self, embed_dim: int, num_features: int, numeric: nn.Module | None = None, numeric_dim: int = 0) -> None:
        super().__init__()
        self.image_norm = nn.LayerNorm(embed_dim)
        self.numeric = numeric
        self.num_features = num_features
        self.out_dim = embed_dim + (numeric_dim if numeric is not None else num_features)

    def forward(self, embedding: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        parts = [self.image_norm(embedding)]
        if self.numeric is not None:
            parts.append(self.numeric(features))
        elif self.num_features:
            parts.append(features)
        return torch.cat(parts, dim=1)
