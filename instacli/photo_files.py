"""Reading files from folders nobody vetted: photos and their metadata, refused early when hostile.

A folder given to ``data build``, ``evaluate --data`` or ``predict`` may hold anything: a FIFO named
``.jpg`` (opening it waits for a writer forever), a symlink to ``/dev/zero`` (reading never ends),
a 3 GB sparse file, a 470-byte PNG of 1×200,000 pixels (upscaling its short side takes gigabytes),
an ``.xz`` that unpacks to gigabytes, a PostScript file named ``.jpg`` (PIL would hand it to
Ghostscript), a 16-bit PNG (clipped to solid white by a plain ``convert("RGB")``), a file name that
is not UTF-8 (every CSV, JSON and Arrow writer chokes on it). The helpers here refuse such a file
with :class:`UnusableFile`, whose message is the one-line reason, *before* memory or time is spent
on it; callers list it as skipped or give it an error row, and go on with the rest. Build, evaluate
and predict all read through this module, so one rule holds everywhere.
"""

from __future__ import annotations

import functools
import io
import lzma
import math
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from instacli.errors import InstacliError, os_error_text

MAX_FILE_MB_ENV = "INSTACLI_MAX_FILE_MB"
#: Largest file read (photo or metadata, and metadata once decompressed): generous for any photo.
DEFAULT_MAX_FILE_MB = 50
#: Largest decoded image: PIL's own decompression-bomb threshold (PIL itself only warns below twice that).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
#: Longer side / shorter side beyond which a file is not a photo (wide panoramas stay well below).
MAX_ASPECT = 50
#: Formats of photos; anything else (EPS, PSD, ICO, …) is refused unopened. AVIF/HEIF join when a plugin provides them.
BASE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: Why a file whose name is not UTF-8 is skipped (no table row, CSV or Arrow column can name it).
NOT_UTF8 = "file name is not valid UTF-8; rename the file"


class UnusableFile(ValueError):
    """A file that cannot be used; the message is the reason, fit for a skipped list or an error column."""


def max_file_bytes() -> int:
    """The size limit of one file, from ``INSTACLI_MAX_FILE_MB`` (megabytes) or the default."""
    raw = os.environ.get(MAX_FILE_MB_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_FILE_MB * 2**20
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = math.nan
    if not math.isfinite(megabytes) or megabytes <= 0:
        raise InstacliError(f"{MAX_FILE_MB_ENV}={raw}: not a positive number of megabytes; set e.g. {MAX_FILE_MB_ENV}={DEFAULT_MAX_FILE_MB}")
    return int(megabytes * 2**20)


def printable_name(name: str) -> str:
    """``name`` with bytes that are not UTF-8 (kept by the OS as surrogates) written as ``\\xNN``:
    every output (CSV, JSON, Arrow, the terminal) can hold it, and it still shows which file it is."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def relative_name(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` in posix form, printable (:func:`printable_name`): how a photo
    is named in tables, dataset rows, reports and prediction files."""
    return printable_name(path.relative_to(root).as_posix())


def reason(exc: Exception) -> str:
    """One line saying why a file could not be used."""
    text = str(exc) if isinstance(exc, UnusableFile) else f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0] if text else type(exc).__name__


def _too_big(size: int, limit: int) -> UnusableFile:
    return UnusableFile(f"larger than {limit / 2**20:.3g} MB ({size / 2**20:,.1f} MB); shrink it or raise {MAX_FILE_MB_ENV}")


def read_limited(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of a regular file (or a symlink to one) of at most ``limit`` bytes (default :func:`max_file_bytes`).

    Anything else (FIFO, device, socket, folder) is refused before it is opened; ``O_NONBLOCK``
    and a second check on the open descriptor cover a file swapped in between.
    """
    limit = max_file_bytes() if limit is None else limit
    name = os.fsdecode(path)
    if printable_name(name) != name:
        raise UnusableFile(NOT_UTF8)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UnusableFile(_not_regular(mode))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UnusableFile(f"cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnusableFile(_not_regular(info.st_mode))
        if info.st_size > limit:
            raise _too_big(info.st_size, limit)
        # sized by the file: read(limit + 1) allocated the whole limit (50 MB) for every photo
        data = handle.read(info.st_size + 1)
        if len(data) > info.st_size:  # it grew while being read: read on, up to the limit
            data += handle.read(limit + 1 - len(data))
    if len(data) > limit:  # it grew while being read
        raise _too_big(len(data), limit)
    return data


def _file_kind(mode: int) -> str:
    return next((k for test, k in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                                   (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")) if test(mode)), "not a file")


def _not_regular(mode: int) -> str:
    return f"not a regular file ({_file_kind(mode)}); only regular files are read"


def not_a_file(path: Path) -> str | None:
    """Why ``path`` is no file to read (missing, a FIFO, a folder, a device), or None when it is one:
    "no such file" for a FIFO or a folder sent the user looking for a typo."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:  # a symlink loop, a folder that cannot be searched
        return f"cannot be opened ({os_error_text(exc)})"
    return None if stat.S_ISREG(mode) else f"not a regular file ({_file_kind(mode)})"


def read_text_limited(path: Path) -> str:
    """A UTF-8 text file, ``.xz``-compressed or not, refused when it (or what it unpacks to) is over the limit."""
    limit = max_file_bytes()
    data = read_limited(path, limit)
    if path.name.endswith(".xz"):
        unpacked = bytearray()
        while data:  # an .xz file may be several streams in a row
            unpacker = lzma.LZMADecompressor()
            unpacked += unpacker.decompress(data, max_length=limit + 1 - len(unpacked))
            if len(unpacked) > limit:
                raise UnusableFile(f"unpacks to more than {limit / 2**20:.3g} MB; not metadata (raise {MAX_FILE_MB_ENV} if it is)")
            if not unpacker.eof:
                raise UnusableFile("truncated .xz file")
            data = unpacker.unused_data
        data = bytes(unpacked)
    return data.decode("utf-8")


@functools.cache  # a failed plugin import searches the whole path again each time
def photo_formats() -> tuple[str, ...]:
    """PIL format names a photo may have here: :data:`BASE_FORMATS` plus AVIF/HEIF where a plugin reads them."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        pass
    else:
        register_heif_opener()
    Image.init()
    return BASE_FORMATS + tuple(f for f in ("AVIF", "HEIF") if f in Image.OPEN)


def open_photo(data: bytes) -> Image.Image:
    """``data`` opened (header only, nothing decoded yet) as a photo; refused unless its format is one
    of :func:`photo_formats` and its size is that of a photo (:data:`MAX_PIXELS`, :data:`MAX_ASPECT`)."""
    formats = photo_formats()
    if not data:  # an interrupted download or copy
        raise UnusableFile("unreadable: empty file (0 bytes); copy or download it again")
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except Image.UnidentifiedImageError:
        hint = "; HEIC/HEIF needs the pillow-heif plugin (pip install pillow-heif)" if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1") and "HEIF" not in formats else ""
        raise UnusableFile(f"unreadable: not a photo in a supported format ({', '.join(formats)}){hint}") from None
    except Image.DecompressionBombError as exc:
        raise UnusableFile(f"too many pixels ({exc})") from None
    check_photo_size(*image.size)
    return image


def check_photo_size(width: int, height: int) -> None:
    """Refuse a size no photo has (:data:`MAX_PIXELS`, :data:`MAX_ASPECT`), read from a file or handed over in memory alike."""
    if width * height > MAX_PIXELS:
        raise UnusableFile(f"{width}×{height} pixels, more than the {MAX_PIXELS / 1e6:.0f} megapixel limit; downscale it")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise UnusableFile(f"{width}×{height} pixels: an aspect ratio over {MAX_ASPECT}:1 is not a photo")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: transparent pixels become white (not whatever colour hides under the alpha), and
    16-bit and float pixels are scaled to 0-255 (``convert`` would clip them: a 16-bit PNG turns white)."""
    if image.mode.startswith("I"):  # I;16, I;16B, I;16L: 0-65535; I (32-bit) holds 16-bit PNG/TIFF data too
        values = np.asarray(image).astype(np.float32) / 257.0
        image = Image.fromarray(np.clip(values, 0, 255).round().astype(np.uint8), "L")
    elif image.mode == "F":  # float images are 0-1 by convention
        image = Image.fromarray(np.clip(np.asarray(image) * 255.0, 0, 255).round().astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_square(source: bytes | str | Path, size: int) -> np.ndarray:
    """Photo → ``(3, size, size)`` uint8: EXIF-rotated, RGB, its center square resized to ``size``.

    Files are read and opened through :mod:`instacli.photo_files` (size, type and format checks).
    ``Image.draft`` lets libjpeg decode a big JPEG directly at a reduced scale (2-8× less work).
    Cropping *before* resizing (``box=``) keeps memory at ``size²`` whatever the aspect ratio
    (upscaling the whole short side of a 1×200,000 image took gigabytes). Raises
    :class:`~instacli.photo_files.UnusableFile` or the PIL error; callers decide whether to skip.
    """
    with open_photo(source if isinstance(source, bytes) else read_limited(source)) as img:
        if img.format == "JPEG":
            w, h = img.size
            ratio = min(w, h) / size
            if ratio >= 2:
                img.draft("RGB", (int(w / ratio * 1.0) + 1, int(h / ratio) + 1))
        return square_of(img, size)


def square_of(image: Image.Image, size: int) -> np.ndarray:
    """An opened photo → ``(3, size, size)`` uint8: EXIF-rotated, RGB, its center square resized to
    ``size``; the one resizing every photo goes through, whether read from a file or handed over in memory."""
    image = ImageOps.exif_transpose(image)
    w, h = image.size
    side = min(w, h)
    if side == 0:
        raise UnusableFile(f"{w}×{h} pixels: an empty image")
    left, top = (w - side) // 2, (h - side) // 2
    image = to_rgb(reduced(image, size, (left, top, left + side, top + side)))  # the centre square, or the whole image
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    image = image.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=2.0)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def reduced(image: Image.Image, size: int, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """``image`` (or its ``box``), when it is not RGB and its longer side at least 4× ``size``, averaged over
    blocks down to at least twice ``size`` (which keeps the final resize's quality), before :func:`to_rgb`
    copies it whole; else ``image`` itself, whole.

    :func:`to_rgb` makes several full-size copies of such an image (alpha compositing, 16-bit scaling):
    a 300 KB PNG of 9,000×9,000 transparent pixels took 1.9 GB to decode (and serve decodes concurrent
    uploads at once, a build one photo per worker). Reduced first, it takes about two copies in its own
    mode. Modes whose values cannot be averaged (palette indices, 1-bit) or that ``reduce`` refuses
    (16-bit) are converted first; RGBA is averaged premultiplied (``reduce`` does that), as
    compositing then averaging would."""
    left, top, right, bottom = box or (0, 0, *image.size)
    factor = max(right - left, bottom - top) // (2 * size)
    if factor < 2 or image.mode == "RGB":  # RGB: to_rgb copies nothing, and the resize reduces it as well
        return image
    if image.mode in ("1", "P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "L" if image.mode == "1" else "RGB")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    return image.reduce(factor, box)


def decode_or_reason(path: Path | bytes, size: int) -> tuple[np.ndarray, str]:
    """:func:`decode_square` of a file to score, never raising: a corrupt, truncated, hostile or
    non-image file gives black pixels and the one-line reason, so that it gets an error row and the rest go on."""
    try:
        return decode_square(path, size), ""
    except Exception as exc:
        return np.zeros((3, size, size), dtype=np.uint8), reason(exc)
