"""Decoding photos into the uint8 squares every encoder starts from, once.

Training touches every image once per epoch; decoding JPEGs each time would dominate a CPU run. So a
dataset split is decoded a single time into a ``(N, 3, R, R)`` uint8 array (``R`` = the encoder's
``resize_size``), kept as a memory-mapped ``.npy`` file in the cache folder (``INSTACLI_CACHE``,
default ``~/.cache/instacli``) and shared by every later run at that size. Prediction instead
streams files through DataLoader workers and never holds a folder in memory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from instacli.errors import InstacliError, os_error_text
from instacli.io import load_npy, save_npy
from instacli.photo_files import decode_or_reason, decode_square, reason


def cache_dir() -> Path:
    return Path(os.environ.get("INSTACLI_CACHE", Path.home() / ".cache" / "instacli"))


def write_cache(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(path)`` for a file of the cache folder. A cache that cannot be written (read-only,
    full, a file in its way) only costs the next command its speed, so this warns and goes on."""
    try:
        write(path)
    except OSError as exc:
        warnings.warn(f"instacli: cannot write the cache folder {cache_dir()} (INSTACLI_CACHE): {os_error_text(exc)}; "
                      "going on without caching; point INSTACLI_CACHE at a writable folder", stacklevel=2)


class _BytesDataset(torch.utils.data.Dataset):
    """Encoded images of a split, decoded in DataLoader workers."""

    def __init__(self, encoded: Sequence[dict], size: int) -> None:
        self.encoded = encoded
        self.size = size

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.encoded[i]
        try:
            return torch.from_numpy(decode_square(item["bytes"] or item["path"], self.size))
        except Exception as exc:
            raise InstacliError(f"{item.get('path') or f'image #{i}'}: cannot decode ({reason(exc)}); rebuild the dataset with `instacli data build`") from None


def decode_split(
    encoded: Sequence[dict], size: int, key: str | None, workers: int = 2, on_batch: Callable[[int], None] | None = None
) -> torch.Tensor:
    """Decode a split's images (``[{"bytes", "path"}]``) to a uint8 tensor, reusing the cache for ``key``.

    ``key`` identifies the split's content (dataset fingerprint + split); ``None`` disables the cache.
    ``on_batch`` is told how many images each decoded batch held (progress).
    """
    n = len(encoded)
    path = cache_dir() / f"decoded-{key}-{size}.npy" if key else None
    cached = load_npy(path, mmap=True) if path is not None else None  # pages load lazily, the file never changes
    if cached is not None and cached.shape == (n, 3, size, size) and cached.dtype == np.uint8:
        return torch.from_numpy(cached)
    array = np.empty((n, 3, size, size), dtype=np.uint8)
    loader = torch.utils.data.DataLoader(
        _BytesDataset(encoded, size), batch_size=64, num_workers=workers if n > 256 else 0
    )
    start = 0
    for batch in loader:
        array[start : start + len(batch)] = batch.numpy()
        start += len(batch)
        if on_batch:
            on_batch(len(batch))
    if path is not None:
        write_cache(path, lambda p: save_npy(p, array))
    return torch.from_numpy(array)


class FileDataset(torch.utils.data.Dataset):
    """Image files streamed for prediction; an unreadable file yields an error string, not an exception."""

    def __init__(self, files: Sequence[Path], size: int) -> None:
        self.files = files
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        pixels, error = decode_or_reason(self.files[i], self.size)
        return torch.from_numpy(pixels), i, error
