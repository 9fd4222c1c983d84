"""Frozen-encoder embeddings of a dataset split, cached on disk beside the decoded images.

A frozen encoder embeds every photo once per run; on posts-dev that is most of a run's time
(efficientnet-lite0 on 2 CPU cores: ≈ 40 s before the first epoch). The embeddings only depend on
the split's content, the encoder (architecture, options and the weights themselves), its
preprocessing and the precision it ran in, so they are stored under a digest of exactly these in
the cache folder (``INSTACLI_CACHE``) and a second run, or every seed of a ``compare``, reuses them.

Files are safetensors (no pickles) written atomically, with a SHA-256 of the embeddings in their
metadata: a truncated or corrupted file is detected on reading and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from instacli.encoders import ImageEncoder
from instacli.decode_cache import cache_dir, write_cache
from instacli.io import atomic_file

_TENSOR = "embeddings"


def _tensor_digest(tensor: torch.Tensor) -> str:
    raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(raw).hexdigest()


def embeddings_path(split_key: str | None, encoder: ImageEncoder, options: dict[str, Any], precision: str) -> Path | None:
    """Where the embeddings of the split ``split_key`` (dataset fingerprint + split) by ``encoder`` live.

    The digest covers the encoder's weights, not just its name: ``pretrained=PATH`` whose file
    changed, or a frozen randomly initialized encoder under another seed, embeds differently.
    ``None`` when the split has no fingerprint (nothing to key the cache on).
    """
    if split_key is None:
        return None
    digest = hashlib.sha256(json.dumps([split_key, options, encoder.preprocess.to_dict(), precision], sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{_tensor_digest(tensor)}".encode())
    return cache_dir() / f"embeddings-{digest.hexdigest()[:32]}.safetensors"


def load_embeddings(path: Path, rows: int) -> torch.Tensor | None:
    """The cached ``(rows, D)`` embeddings at ``path``; None when missing, truncated, corrupt or of another shape."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            expected = (handle.metadata() or {}).get("sha256")
            embeddings = handle.get_tensor(_TENSOR)
    except (OSError, SafetensorError):
        return None
    if embeddings.ndim != 2 or len(embeddings) != rows or expected != _tensor_digest(embeddings):
        return None
    return embeddings


def save_embeddings(path: Path, embeddings: torch.Tensor) -> None:
    """Write ``embeddings`` with their checksum, atomically (a reader never sees a partial file)."""
    embeddings = embeddings.detach().to("cpu").contiguous()

    def write(path: Path) -> None:
        with atomic_file(path, "wb") as handle:
            handle.write(save({_TENSOR: embeddings}, metadata={"sha256": _tensor_digest(embeddings)}))

    write_cache(path, write)
