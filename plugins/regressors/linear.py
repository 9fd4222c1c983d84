"""``linear``: one linear layer over ``[LayerNorm(embedding) ⊕ numeric features]``.

The baseline that tells whether the deeper regressors learn anything beyond a weighted sum; with
a strong pretrained encoder it is also hard to overfit on a few hundred posts.
"""

from __future__ import annotations

from instacli.registry import register_regressor
from instacli_plugins.regressors.mlp import MLPRegressor


@register_regressor("linear")
def linear(*, embed_dim: int, num_features: int) -> MLPRegressor:
    """One linear layer over [LayerNorm(embedding) ⊕ numbers]: the baseline."""
    return MLPRegressor(embed_dim, num_features, hidden=(), dropout=0.0, image_dim=0)
