"""Atomic writes: an output appears whole or not at all, and is never overwritten silently."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from instacli.errors import InstacliError


def check_writable_target(path: Path, overwrite: bool, what: str = "output") -> None:
    """Refuse to replace an existing file or folder unless the user asked for it."""
    if path.exists() and not overwrite:
        raise InstacliError(f"{path}: {what} already exists; pass --overwrite to replace it or choose another path")


def _umask() -> int:
    """The process umask. It can only be read by setting it, so it is set to the strict 077 for the
    instant before it is put back: a file another thread creates meanwhile gets less access, never more."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _as_if_created(path: Path | int, mode: int) -> None:
    """Give a ``mkstemp``/``mkdtemp`` result (0600/0700, kept by the final rename) the mode a plain
    ``open``/``mkdir`` would have given it (0644/0755 under the usual umask 022), so that a teammate or
    a web server can read the outputs as with any other file."""
    os.chmod(path, mode & ~_umask())


@contextmanager
def atomic_dir(path: Path, overwrite: bool = False, what: str = "output folder") -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``path`` and move it into place on success.

    The temporary folder sits in the same parent so the final ``rename`` is atomic; on any error
    (Ctrl-C included) it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    check_writable_target(path, overwrite, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _as_if_created(tmp, 0o777)
        yield tmp
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, trash / "old")
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` and rename it over ``path`` when the block succeeds,
    for writers that want a name rather than a handle (e.g. safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _as_if_created(tmp, 0o666)  # after the writer: some (safetensors 0.8) create the file 0600 themselves
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path`` for writing and rename it over ``path`` when closed."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle


def save_npy(path: Path, array: Any) -> None:
    """Save a NumPy array as ``.npy``, atomically (a cache file is never seen half-written)."""
    import numpy as np

    with atomic_file(path, "wb") as handle:
        np.save(handle, array)


def load_npy(path: Path, mmap: bool = False) -> Any:
    """A cached array written by :func:`save_npy` (memory-mapped copy-on-write with ``mmap``), or None
    when it is missing, empty, truncated or not a plain ``.npy``: a cache file is rebuilt, never trusted."""
    import numpy as np

    try:
        return np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_file(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
