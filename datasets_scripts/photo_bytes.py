"""Turning photo files into the portable, small, upright RGB bytes a dataset stores.

Decoding is the cost of a build, so it runs in a process pool and does as little as it can: a
JPEG much larger than needed is decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``), and a file
that is already a small, upright RGB JPEG or PNG keeps its original bytes (after a decode that
proves it is readable: for a JPEG at 1/8 scale, which still entropy-decodes every block, so a
truncated or corrupt file fails as it would at full size) instead of being re-encoded.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import signal
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from PIL import Image, ImageOps

from instacli import interrupts
from instacli.errors import InstacliError
from instacli.photo_files import UnusableFile, open_photo, read_limited, reason, reduced, to_rgb

JPEG_QUALITY = 95
_ORIENTATION = 0x0112
_KEEPABLE_FORMATS = ("JPEG", "PNG")


@dataclass(frozen=True)
class Encoded:
    """A photo ready for the dataset: the bytes to store and their sha256 (for the fingerprint)."""

    data: bytes
    sha256: str
    kept_original: bool


def _target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_photo(path: str, max_side: int) -> Encoded | str:
    """The stored form of one photo, or the reason it cannot be used (a string).

    The file is read and opened through :mod:`instacli.photo_files`, as predict does: hostile files
    (FIFO, device, oversized, not a photo format, absurd size) come back as their reason.
    """
    try:
        original = read_limited(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = open_photo(original)
            orientation = image.getexif().get(_ORIENTATION, 1)
            if (image.format in _KEEPABLE_FORMATS and image.mode == "RGB" and orientation == 1
                    and max(image.size) <= max_side):
                if image.format == "JPEG":  # the 1/8-scale decode still reads every coded block: 40% less time
                    image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
                return Encoded(original, hashlib.sha256(original).hexdigest(), kept_original=True)
            target = _target_size(*image.size, max_side)
            if image.format == "JPEG" and target != image.size:
                image.draft(None, target)
            if orientation != 1:  # exif_transpose copies the whole image even when there is nothing to do
                image = ImageOps.exif_transpose(image)
            image = to_rgb(reduced(image, max_side))
            target = _target_size(*image.size, max_side)
            if image.size != target:
                image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=JPEG_QUALITY)
    except InstacliError:  # a bad setting (INSTACLI_MAX_FILE_MB), not a bad photo: stop the build
        raise
    except UnusableFile as exc:
        return str(exc)
    except Exception as exc:  # any decoder failure means "unreadable photo": report it, never crash the build
        return f"unreadable image ({reason(exc)})"
    data = out.getvalue()
    return Encoded(data, hashlib.sha256(data).hexdigest(), kept_original=False)


def _encode_task(task: tuple[str, int]) -> Encoded | str:
    """``encode_photo`` in a worker; a kept original travels back without its bytes.

    The parent reads those again from the page cache, which costs far less than pickling them
    through the pool's pipe (on small photos that copy made two workers barely faster than one).
    """
    result = encode_photo(*task)
    return Encoded(b"", result.sha256, True) if isinstance(result, Encoded) and result.kept_original else result


def _with_original_bytes(path: str, result: Encoded | str) -> Encoded | str:
    if isinstance(result, Encoded) and result.kept_original and not result.data:
        return Encoded(read_limited(path), result.sha256, True)
    return result


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops the pool (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: Workers start from a clean single-threaded server, not by forking the caller: a process that
#: already runs torch or other threads can fork a child that waits forever on a lock some thread
#: held at that moment (a `data build` inside the test process hung so: a pool worker blocked in
#: its task queue's lock, the parent in join). Python 3.14 makes this the default on Linux.
POOL_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def encode_photos(
    paths: Sequence[str],
    max_side: int,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Encoded | str]:
    """``encode_photo`` for every path, in order, on ``workers`` processes; ``progress(done, total)``.

    Results are yielded as they come, so that a caller that stores each one (the build's spool)
    never holds every photo's bytes at once."""
    from instacli.settings import usable_cores  # here, not at the top: the pool's workers import this module

    total = len(paths)
    workers = min(workers, total, usable_cores())
    tasks = [(p, max_side) for p in paths]
    if workers <= 1 or total <= 1:  # in this process: the bytes are already here, nothing to strip or re-read
        results: Iterable[Encoded | str] = (encode_photo(*task) for task in tasks)
        yield from _counted(results, paths, progress)
        return
    chunksize = max(1, min(32, total // (workers * 8)))
    # an executor, not multiprocessing.Pool: a Pool replaces a worker that dies at start without a word,
    # so a script calling build_dataset without a __main__ guard (each worker re-runs the script, which
    # fails) looped forever; an executor says its workers died
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(POOL_START_METHOD), initializer=_ignore_sigint)
    try:
        yield from _counted(pool.map(_encode_task, tasks, chunksize=chunksize), paths, progress)
    except BrokenProcessPool:
        raise InstacliError("a photo-decoding worker process died (killed, out of memory, or it re-ran a script that builds "
                            "a dataset at import: put the script's code under `if __name__ == \"__main__\":`, or pass workers=1)") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C or an error: drop the photos not yet started


def _counted(results: Iterable[Encoded | str], paths: Sequence[str], progress: Callable[[int, int], None] | None) -> Iterator[Encoded | str]:
    for done, (path, result) in enumerate(zip(paths, results), 1):
        interrupts.check()  # a Ctrl-C that a finalizer swallowed (e.g. the pool's) stops the build here
        yield _with_original_bytes(path, result)
        if progress is not None:
            progress(done, len(paths))
