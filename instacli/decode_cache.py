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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from instacli import interrupts
from instacli.errors import InstacliError, os_error_text
from instacli.io import atomic_file, load_npy
from instacli.photo_files import decode_or_reason, decode_square, reason
from instacli.settings import usable_cores


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


#: Images decoded per step. A first decode holds one chunk, never the split: written straight to the
#: cache file, so 100,000 photos at 224 px (15 GB) decode with the memory of 64 (10 MB).
CHUNK = 64


def _decoded_chunks(encoded: Sequence[dict], size: int, workers: int, on_batch: Callable[[int], None] | None) -> Iterator[np.ndarray]:
    """The split's ``(k, 3, size, size)`` uint8 squares, :data:`CHUNK` at a time, in order."""
    loader = torch.utils.data.DataLoader(
        _BytesDataset(encoded, size), batch_size=CHUNK, num_workers=min(workers, usable_cores()) if len(encoded) > 256 else 0
    )
    for batch in loader:
        interrupts.check()  # a Ctrl-C that a finalizer swallowed (e.g. a decode worker's) stops here
        if on_batch:
            on_batch(len(batch))
        yield batch.numpy()


def _write_npy(path: Path, shape: tuple[int, ...], chunks: Iterator[np.ndarray]) -> None:
    """A uint8 ``.npy`` of ``shape`` from its row ``chunks``, written in order and atomically.

    The header comes first (the same bytes ``np.save`` writes), then each chunk with a plain write: a
    writable memory map (``open_memmap``) would count every written page as this process's memory
    until the kernel writes it back, so the first decode's resident memory would again grow with N.
    """
    with atomic_file(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for chunk in chunks:
            handle.write(np.ascontiguousarray(chunk).data)


def decode_split(
    encoded: Sequence[dict], size: int, key: str | None, workers: int = 2, on_batch: Callable[[int], None] | None = None
) -> torch.Tensor:
    """Decode a split's images (``[{"bytes", "path"}]``) to a uint8 tensor, reusing the cache for ``key``.

    ``key`` identifies the split's content (dataset fingerprint + split); ``None`` disables the cache.
    The tensor is the cache file, memory-mapped: its pages load as training reads them. Without a
    key, or when the cache folder cannot be written, the split is decoded into memory instead.
    ``on_batch`` is told how many images each decoded batch held (progress).
    """
    shape = (len(encoded), 3, size, size)
    path = cache_dir() / f"decoded-{key}-{size}.npy" if key else None

    def cached() -> np.ndarray | None:
        array = load_npy(path, mmap=True) if path is not None else None  # pages load lazily, the file never changes
        return array if array is not None and array.shape == shape and array.dtype == np.uint8 else None

    array = cached()
    if array is None and path is not None:
        write_cache(path, lambda p: _write_npy(p, shape, _decoded_chunks(encoded, size, workers, on_batch)))
        array = cached()
    if array is None:  # no cache to write into: hold the split in memory
        array, start = np.empty(shape, dtype=np.uint8), 0
        for chunk in _decoded_chunks(encoded, size, workers, on_batch):
            array[start : start + len(chunk)] = chunk
            start += len(chunk)
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
