"""``ridge`` and ``gbrt``: classical regressors fitted on [image embedding ⊕ numeric features] after training.

They serve ``compare`` and users with little data: no gradient descent, so nothing to tune or
overfit through epochs. The network trains its category head (and encoder) as usual; once training
ends, the trainer embeds the training split and calls :meth:`SklearnRegressor.fit`.

Runs hold no pickles, so the fitted scikit-learn object is not saved. The training matrix is kept
as buffers in ``model.safetensors`` instead and the estimator is refitted from it, deterministically,
the first time a loaded run predicts (under a second for a few thousand posts).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field

from instacli.registry import Count, PositiveFloat, register_regressor
from instacli.regressors import LikesRegressor


class SklearnRegressor(LikesRegressor):
    """A scikit-learn estimator behind the regressor interface: ``(embedding, features) → (B,)``."""

    fits_after_training = True

    def __init__(self, embed_dim: int, num_features: int, make_estimator: Any) -> None:
        super().__init__()
        self.make_estimator = make_estimator
        self.estimator: Any = None
        # inputs and target of the training rows side by side (last column = target)
        self.register_buffer("train_xy", torch.zeros(0, embed_dim + num_features + 1))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Resize the (empty at build time) training-matrix buffers to the saved ones before loading."""
        if prefix + "train_xy" in state_dict:
            self.train_xy = torch.empty_like(state_dict[prefix + "train_xy"])
        self.estimator = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def _inputs(embedding: torch.Tensor, features: torch.Tensor) -> np.ndarray:
        return torch.cat([embedding, features], dim=1).detach().float().cpu().numpy()

    def fit(self, embedding: torch.Tensor, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Fit on rows with a known (standardized log1p) target and keep them for refitting after a load."""
        keep = ~torch.isnan(targets)
        self.train_xy = torch.cat([embedding, features, targets[:, None]], dim=1)[keep].detach().float().cpu()
        self.estimator = None

    def forward(self, embedding: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if len(self.train_xy) == 0:  # not fitted yet (during training): contributes no loss gradient
            return embedding.new_zeros(len(embedding))
        if self.estimator is None:
            xy = self.train_xy.numpy()
            self.estimator = self.make_estimator().fit(xy[:, :-1], xy[:, -1])
        predicted = self.estimator.predict(self._inputs(embedding, features))
        return torch.as_tensor(predicted, dtype=torch.float32, device=embedding.device)


@register_regressor("ridge")
def ridge(*, embed_dim: int, num_features: int, alpha: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 10.0) -> SklearnRegressor:
    """scikit-learn Ridge on [embedding ⊕ numbers], fitted once after training."""
    from sklearn.linear_model import Ridge

    return SklearnRegressor(embed_dim, num_features, lambda: Ridge(alpha=alpha))


@register_regressor("gbrt")
def gbrt(
    *, embed_dim: int, num_features: int, max_iter: Count = 200, learning_rate: PositiveFloat = 0.05,
    loss: Literal["absolute_error", "squared_error"] = "absolute_error",
) -> SklearnRegressor:
    """scikit-learn HistGradientBoostingRegressor on [embedding ⊕ numbers], fitted once after training."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return SklearnRegressor(
        embed_dim, num_features,
        lambda: HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=learning_rate, loss=loss, random_state=0),
    )
