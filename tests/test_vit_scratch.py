"""``vit-scratch``: a small default that fits a CPU, and the original 137M-parameter design as a preset."""

from __future__ import annotations

import pytest
import torch

from instacli import registry
from instacli.errors import InstacliError


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_is_small_and_pools_tokens() -> None:
    encoder = registry.encoders.create("vit-scratch")
    assert encoder.preprocess.image_size == 64 and encoder.embed_dim == 192
    assert len(encoder.blocks) == 4
    assert n_params(encoder) < 3_000_000
    out = encoder(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 192) and torch.isfinite(out).all()


def test_seed_512_preset_reproduces_the_original_design() -> None:
    """512 px, 16-px patches, width 64, 4 heads, flatten + [2048, 1024, 512, 128, 64]: ≈137M weights,
    almost all of them in the first dense layer over the 1024 flattened patch vectors."""
    options = registry.encoders.resolve_options("vit-scratch", "seed-512")
    encoder = registry.encoders.create("vit-scratch", **options)
    total = n_params(encoder)
    first_dense = encoder.head[1]
    assert 136_000_000 < total < 138_000_000
    assert first_dense.in_features == 1024 * 64 and first_dense.out_features == 2048
    assert n_params(first_dense) / total > 0.97
    assert encoder.embed_dim == 64 and encoder.preprocess.image_size == 512


def test_explicit_options_override_the_preset() -> None:
    options = registry.encoders.resolve_options("vit-scratch", "seed-512", image_size=256)
    assert options["image_size"] == 256 and options["pool"] == "flatten"


def test_more_tokens_than_a_64_by_64_grid_are_one_line_before_any_weight() -> None:
    """``-E image_size=1024 -E patch_size=1``: a million tokens per photo grew past 10 GB before the first step."""
    with pytest.raises(InstacliError) as info:
        registry.encoders.create("vit-scratch", image_size=1024, patch_size=1)
    assert str(info.value) == ("encoder 'vit-scratch': image_size 1024 / patch_size 1 makes 1048576 tokens per photo, more than 4096 "
                               "(a patch_size of at least 16); fix its options")
    assert registry.encoders.create("vit-scratch", image_size=1024, patch_size=16).pos_embed.shape[1] == 4096
