"""Atomic writes: an output appears whole or not at all, and is never overwritten silently."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from instacli.errors import InstacliError, os_error_text


def check_writable_target(path: Path, overwrite: bool, what: str = "output", marker: str | None = None) -> None:
    """Refuse to replace an existing file or folder unless the user asked for it. An output folder that
    always holds the file ``marker`` replaces nothing else even then, bar an empty folder:
    ``evaluate --out RUN --overwrite`` deleted the run, ``--out PHOTOS`` the photos."""
    if path.exists() and not overwrite:
        raise InstacliError(f"{path}: {what} already exists; pass --overwrite to replace it or choose another path")
    if marker is not None and path.exists() and not (path / marker).is_file() and not (path.is_dir() and not any(path.iterdir())):
        raise InstacliError(f"--out {path}: exists and is not an instacli {what} (no {marker}); refusing to replace it, choose another path")


#: Outputs this process holds the lock of, with how many nested ``output_lock`` blocks hold each.
_held: dict[Path, int] = {}


def _lock_file(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


def _remove_stale_temps(path: Path) -> None:
    """Remove the hidden temp outputs of ``path`` that a killed writer (SIGKILL, power loss) left beside it.
    Called under the output's lock: every live writer of ``path`` holds that lock, so none is writing them."""
    name = glob.escape(path.name)
    random = "?" * 8  # the random part of a tempfile name
    for stale in (*path.parent.glob(f".{name}.tmp-{random}"), *path.parent.glob(f".{name}.old-{random}"),
                  *path.parent.glob(f".{name}.{random}.tmp")):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output ``path`` (a file or folder) while the block writes it.

    Two instacli processes given the same ``--out`` would otherwise both write it and the last to
    finish would silently win, or a run would end with the settings of one and the weights of the
    other. The lock is ``fcntl.flock`` on a hidden ``.<name>.lock`` beside ``path``: the kernel drops
    it when its holder dies, so a killed process never leaves the output locked. The loser fails at
    once with the holder's pid. Nested blocks of one process on the same path share the lock.
    """
    shown, path = Path(path), Path(path).absolute()
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    lock = _lock_file(path)
    while True:
        try:  # the first write beside the output: checks that it can be written before any work
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise InstacliError(f"{shown}: cannot write here ({os_error_text(exc)}); choose another --out or fix the folder's permissions") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InstacliError(
                f"{shown}: is being written by another instacli process (pid {holder}); wait for it or choose another --out"
            ) from None
        try:  # the holder before us may have removed the file after we opened it: lock the file that is there
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[path] = 1
        _remove_stale_temps(path)
        yield
    except OSError as exc:
        _name_the_output(exc, shown)
        raise
    finally:
        _held.pop(path, None)
        lock.unlink(missing_ok=True)  # while still locked, so that nobody holds a lock on a removed file
        os.close(fd)


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


def _name_the_output(exc: BaseException, path: Path) -> None:
    """A write that failed without saying where (a full disk reports ``[Errno 28]`` alone) names the
    output being written, so that the one-line error says which."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
        exc.filename = str(path)


@contextmanager
def atomic_dir(path: Path, overwrite: bool = False, what: str = "output folder", marker: str | None = None) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``path`` and move it into place on success (over an
    existing ``path`` only as :func:`check_writable_target` allows, ``marker`` included).

    The temporary folder sits in the same parent so the final ``rename`` is atomic; on any error
    (Ctrl-C included) it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    check_writable_target(path, overwrite, what, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            _as_if_created(tmp, 0o777)
            yield tmp
            check_writable_target(path, overwrite, what, marker)  # again: something else may have made it meanwhile
            if path.exists():
                trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, trash / "old")
                os.replace(tmp, path)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            _name_the_output(exc, path)
            raise


@contextmanager
def atomic_path(path: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` and rename it over ``path`` when the block succeeds,
    for writers that want a name rather than a handle (e.g. safetensors). With ``overwrite=False``
    the rename refuses a ``path`` that appeared meanwhile."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _as_if_created(tmp, 0o666)  # after the writer: some (safetensors 0.8) create the file 0600 themselves
        if not overwrite:
            check_writable_target(path, overwrite)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _name_the_output(exc, path)
        raise


@contextmanager
def atomic_file(path: Path, mode: str = "w", overwrite: bool = True) -> Iterator[Any]:
    """Open a temporary file beside ``path`` for writing and rename it over ``path`` when closed."""
    with atomic_path(path, overwrite) as tmp, open(tmp, mode) as handle:
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
