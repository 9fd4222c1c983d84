"""What every likes regressor provides, so that the trainer treats all of them alike.

A regressor maps the image embedding ``(B, D)`` (plus the caption's, when captions are used) and the
scaled numeric features ``(B, F)`` to standardized log1p(likes) ``(B,)``. Neural ones learn by
gradients with the rest of the network; classical ones (``ridge``, ``gbrt``) say
``fits_after_training`` and are fitted by :meth:`LikesRegressor.fit` on the best epoch's embeddings.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class LikesRegressor(nn.Module):
    """Base class of likes regressors: ``forward(embedding, features) -> (B,)``."""

    #: True for a regressor fitted once after training (:meth:`fit`) instead of by gradients.
    fits_after_training: ClassVar[bool] = False

    def forward(self, embedding: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, embedding: torch.Tensor, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Fit on the training rows (``targets``: standardized log1p(likes), NaN where unknown); only
        regressors that set :attr:`fits_after_training` are fitted this way."""
        raise NotImplementedError(f"{type(self).__name__} learns by gradients; it is not fitted after training")
