"""Likes regressors: the shared interface, the shared fusion, and each one's shape."""

from __future__ import annotations

import pytest
import torch

from instacli import registry
from instacli.errors import InstacliError
from instacli_plugins.regressors.fusion import LateFusion

#: The regressors that learn by gradients (the others are fitted after training: tests/test_sklearn_regressors.py).
NAMES = [n for n in registry.regressors.names() if not registry.regressors.create(n, embed_dim=4, num_features=1).fits_after_training]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_features", [0, 3])
def test_interface_and_training_step(name: str, num_features: int) -> None:
    torch.manual_seed(0)
    model = registry.regressors.create(name, embed_dim=16, num_features=num_features)
    embedding, features, target = torch.randn(8, 16), torch.randn(8, num_features), torch.randn(8)
    for module in model.modules():  # one SGD step must lower the loss: compare without dropout noise
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
    before = torch.nn.functional.mse_loss(model(embedding, features), target)
    before.backward()
    optimizer.step()
    prediction = model(embedding, features)
    assert prediction.shape == (8,)
    assert torch.nn.functional.mse_loss(prediction, target) < before


@pytest.mark.parametrize("name", NAMES)
def test_embedding_scale_does_not_matter(name: str) -> None:
    """The shared LayerNorm makes every regressor blind to the encoder's embedding scale."""
    model = registry.regressors.create(name, embed_dim=16, num_features=3).eval()
    embedding, features = torch.randn(4, 16), torch.randn(4, 3)
    assert torch.allclose(model(embedding, features), model(embedding * 50 + 3, features), atol=1e-4)


def test_fusion_concatenates_normed_embedding_and_features() -> None:
    fusion = LateFusion(embed_dim=4, num_features=2, image_dim=0)
    embedding, features = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[7.0, -7.0]])
    fused = fusion(embedding, features)
    assert fusion.out_dim == 6 and fused.shape == (1, 6)
    assert torch.allclose(fused[0, :4], torch.nn.functional.layer_norm(embedding, (4,))[0])
    assert torch.equal(fused[0, 4:], features[0])
    assert LateFusion(4, 3, numeric=torch.nn.Linear(3, 5), numeric_dim=5, image_dim=0).out_dim == 9


def test_fusion_adapter_squeezes_wide_embeddings() -> None:
    """A 1280-d embedding reaches the regressor as 64 values behind dropout (the measured default)."""
    fusion = LateFusion(embed_dim=1280, num_features=2).eval()
    assert fusion.out_dim == 66
    assert [type(m).__name__ for m in fusion.image_adapter] == ["LayerNorm", "Dropout", "Linear"]
    assert fusion.image_adapter[1].p == 0.5
    assert fusion(torch.randn(3, 1280), torch.randn(3, 2)).shape == (3, 66)


def test_architectures() -> None:
    linear = registry.regressors.create("linear", embed_dim=16, num_features=3)
    assert [type(m).__name__ for m in linear.head] == ["Linear"]
    assert sum(p.numel() for p in linear.parameters()) == 2 * 16 + (16 + 3) + 1  # LayerNorm + one linear layer

    mlp = registry.regressors.create("mlp", embed_dim=16, num_features=3, hidden=[8, 4], dropout=0.5)
    linears = [m for m in mlp.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 + 3, 8), (8, 4), (4, 1)]
    assert [m.p for m in mlp.head if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert registry.regressors.create("mlp", embed_dim=16, num_features=3, hidden=32).head[0].out_features == 32

    conv = registry.regressors.create("conv1d", embed_dim=16, num_features=3, hidden=12)
    assert conv.out.in_features == 64 + 12


def test_unknown_option_lists_the_known_ones() -> None:
    with pytest.raises(InstacliError, match="regressor 'linear' has no option 'hidden'; its options: none"):
        registry.regressors.create("linear", embed_dim=16, num_features=3, hidden=[8])
    with pytest.raises(InstacliError, match="its options: hidden, dropout"):
        registry.regressors.create("mlp", embed_dim=16, num_features=3, width=8)
