"""Captions as a third input: frozen text encoders whose embeddings are computed once and cached.

A text encoder (registry ``instacli.text_encoders``) maps captions to fixed vectors. It stays frozen
(fine-tuning a language model on a few thousand captions overfits and costs far more than it
gives), so each caption is embedded once per dataset split and the vectors are cached beside the
decoded images. The model sees them through a small per-modality adapter (late fusion).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from instacli import registry
from instacli.decode_cache import cache_dir, write_cache
from instacli.io import load_npy, save_npy


class TextEncoder:
    """Base class of what a registered text encoder factory returns: frozen, so not an ``nn.Module``.

    Subclasses set ``embed_dim`` and ``saved_options`` (what the run stores to rebuild it offline)."""

    embed_dim: int
    saved_options: dict[str, Any]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Captions → ``(N, embed_dim)`` float32; an empty caption is a valid input."""
        raise NotImplementedError


def embed_texts(name: str, options: dict[str, Any], texts: Sequence[str], key: str | None) -> np.ndarray:
    """Embeddings of ``texts`` with text encoder ``name``, cached under ``key`` (``None``: no cache)."""
    path = None
    if key:
        digest = hashlib.sha256(json.dumps([name, options, key], sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = cache_dir() / f"text-{digest}.npy"
        cached = load_npy(path)
        if cached is not None and cached.ndim == 2 and len(cached) == len(texts):
            return cached
    encoder = registry.text_encoders.create(name, **options)
    vectors = np.asarray(encoder.encode([t or "" for t in texts]), dtype=np.float32)
    if path is not None:
        write_cache(path, lambda p: save_npy(p, vectors))
    return vectors
