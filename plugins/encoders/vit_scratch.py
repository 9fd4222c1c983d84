"""``vit-scratch``: a small Vision Transformer trained from scratch.

Four pre-norm transformer blocks over patch tokens, then a class token (or mean of tokens) as the
embedding. The default is sized for a laptop CPU: 64×64 px, 8-px patches (64 tokens), width 192.
Unlike the design we started from, it never flattens the token grid into a dense layer (that layer
held ≈134M of 137M weights and memorised instead of learning); the ``seed-512`` preset keeps that
original configuration reproducible for comparison.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from instacli.encoders import ImageEncoder, Preprocess
from instacli.registry import Count, DropRate, ImageSize, PositiveFloat, register_encoder

#: Patch tokens per photo at most (a 64 × 64 grid; the seed-512 preset has 1024): every block's activations
#: grow with them, and ``-E image_size=1024 -E patch_size=1`` (1,048,576) grew past 10 GB before its first step.
MAX_TOKENS = 4096


class Attention(nn.Module):
    """Multi-head self-attention on top of PyTorch's fused scaled-dot-product kernel.

    Dropout acts on the output projection, not on the attention probabilities: on CPU a dropout
    inside the kernel forces its unfused math path, and at 1024 tokens (the seed-512 preset)
    drawing that mask made a training step of 32 images 6× slower (14.6 → 2.5 s).
    """

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)), with stochastic depth."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))
        self.drop_path = drop_path

    def _residual(self, branch: torch.Tensor) -> torch.Tensor:
        """Drop the whole residual branch for random samples while training (stochastic depth)."""
        if not self.training or self.drop_path == 0.0:
            return branch
        keep = 1.0 - self.drop_path
        mask = branch.new_empty(branch.shape[0], 1, 1).bernoulli_(keep)
        return branch * mask / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._residual(self.attn(self.norm1(x)))
        return x + self._residual(self.mlp(self.norm2(x)))


def conv_stem(width: int, patch_size: int) -> nn.Sequential:
    """Stack of stride-2 3×3 convolutions reaching the patch stride (Xiao et al. 2021).

    It replaces the single strided "patchify" convolution and makes small ViTs train far more
    stably on little data; the output grid is the same as that of ``patch_size`` patches.
    """
    steps = int(math.log2(patch_size))
    if 2**steps != patch_size:
        raise ValueError(f"stem='conv' needs a power-of-two patch_size, got {patch_size}")
    layers: list[nn.Module] = []
    channels = 3
    for i in range(steps):
        out = width if i == steps - 1 else max(16, width // 2 ** (steps - 1 - i))
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.GELU()]
        channels = out
    layers.append(nn.Conv2d(channels, width, 1))
    return nn.Sequential(*layers)


class ViTScratch(ImageEncoder):
    """Patch embedding → [class token] + position embedding → N pre-norm blocks → norm → pooling."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        pool: str,
        stem: str,
        dropout: float,
        drop_path: float,
        head_dims: tuple[int, ...],
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        tokens = (image_size // patch_size) ** 2
        if tokens > MAX_TOKENS:
            raise ValueError(f"image_size {image_size} / patch_size {patch_size} makes {tokens} tokens per photo, more than {MAX_TOKENS} "
                             f"(a patch_size of at least {-(-image_size // math.isqrt(MAX_TOKENS))})")
        if pool not in ("cls", "mean", "flatten"):
            raise ValueError(f"pool must be cls, mean or flatten, got {pool!r}")
        self.preprocess = Preprocess(image_size=image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        self.pool = pool
        if stem == "conv":
            self.patch_embed: nn.Module = conv_stem(width, patch_size)
        elif stem == "patch":
            self.patch_embed = nn.Conv2d(3, width, patch_size, stride=patch_size)
        else:
            raise ValueError(f"stem must be patch or conv, got {stem!r}")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + (pool == "cls"), width) * 0.02)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*(Block(width, heads, mlp_ratio, dropout, r) for r in rates))
        self.norm = nn.LayerNorm(width)
        if pool == "flatten":  # the original design: flatten all token vectors into a dense stack
            layers: list[nn.Module] = [nn.Flatten()]
            fan_in = tokens * width
            for dim in head_dims:
                layers += [nn.Linear(fan_in, dim), nn.GELU(), nn.Dropout(0.5)]
                fan_in = dim
            self.head: nn.Module = nn.Sequential(*layers)
            self.embed_dim = fan_in
        else:
            self.head = nn.Identity()
            self.embed_dim = width
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def cam_layer(self) -> tuple[nn.Module, int]:
        """The patch tokens as the stem makes them, a grid of maps, before attention mixes them: on photos
        whose class is a coloured square (tests/test_explain.py) their Grad-CAM peaked inside the square
        for 60 of 60 photos, the final norm's tokens for 52, those entering the last block for 5."""
        return self.patch_embed, 0

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        if self.pool == "cls":
            return x[:, 0]
        if self.pool == "mean":
            return x.mean(dim=1)
        return self.head(x)


SEED_512 = dict(
    image_size=512, patch_size=16, width=64, heads=4, depth=4, mlp_ratio=2.0, pool="flatten",
    stem="patch", dropout=0.1, drop_path=0.0, head_dims=(2048, 1024, 512, 128, 64),
)


@register_encoder(
    "vit-scratch",
    description="Our own 4-block ViT, trained from scratch; small and CPU-friendly by default",
    pretrained=None,
    input_size=64,
    presets={"seed-512": SEED_512},
)
def vit_scratch(
    *,
    image_size: ImageSize = 64,
    patch_size: Count = 8,
    width: Count = 192,
    depth: Count = 4,
    heads: Count = 3,
    mlp_ratio: PositiveFloat = 4.0,
    pool: Literal["cls", "mean", "flatten"] = "mean",
    stem: Literal["patch", "conv"] = "conv",
    dropout: DropRate = 0.0,
    drop_path: DropRate = 0.1,
    head_dims: tuple[Count, ...] = (),
) -> ViTScratch:
    """Our own 4-block ViT, trained from scratch; small and CPU-friendly by default."""
    options = {**locals(), "head_dims": list(head_dims)}  # every argument: what rebuilds this architecture
    encoder = ViTScratch(**{**options, "head_dims": tuple(head_dims)})
    encoder.saved_options = options
    return encoder
