"""One exception type for everything a user can fix.

The CLI catches :class:`InstacliError` and prints its message as a single line (no traceback),
so every message must name the file or option at fault and say how to fix it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

    from pydantic import ValidationError


class InstacliError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def os_error_text(exc: OSError) -> str:
    """What the system said, without Python's ``[Errno N]`` prefix: ``No space left on device``."""
    return exc.strerror or (str(exc.args[0]) if exc.args else type(exc).__name__)


def os_error_message(exc: OSError) -> str:
    """An :class:`OSError` (disk full, read-only folder, a file where a folder should be) as one line
    naming the path and what to do; the CLI prints it instead of a traceback."""
    import errno

    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    fix = {
        errno.ENOSPC: "free some space or write elsewhere",
        errno.EDQUOT: "free some space or write elsewhere",
        errno.EROFS: "choose a writable path",
        errno.EACCES: "check its permissions or choose another path",
        errno.EPERM: "check its permissions or choose another path",
        errno.EISDIR: "give a file name, not a folder",
        errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
        errno.EEXIST: "remove it or choose another path",
        errno.ENOENT: "check the path",
    }.get(exc.errno, "check the path and the disk")
    return f"{paths or 'a file operation'}: {os_error_text(exc)}; {fix}"


def require_extra(module: str, extra: str, command: str) -> ModuleType:
    """Import ``module``, an optional dependency of ``command``; when it is not installed, a one-line
    error naming the extra that installs it (the core install stays lean)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InstacliError(f"{command} needs the {extra} extra ({exc.name or module} is missing); install it with pip install 'instacli[{extra}]'") from None


def exception_line(exc: BaseException) -> str:
    """One line for an exception from a library whose message runs over several. torch's refusal of a
    pickled object (``weights_only=True``) is six lines, timm's one long one, and both advise
    ``weights_only=False``, which would run the file's code: only the sentence naming the refused object is kept."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith(("Weights only load failed", "weights_only=True blocked")):  # torch's words; timm's, in one line
        sentences = [sentence for line in lines for sentence in line.split(". ")]
        refused = next((sentence for sentence in sentences if "GLOBAL" in sentence or "Unsupported" in sentence), "")
        return f"it holds pickled Python objects, not only tensors, refused for safety: {refused}".rstrip(": ")
    return lines[0] if lines else type(exc).__name__


#: How the files a state dict is saved in start: a zip (``torch.save``), a pickle (an older ``torch.save``).
CHECKPOINT_STARTS = (b"PK\x03\x04", b"\x80")


def unreadable_checkpoint(path: Path, exc: Exception) -> str:
    """Why the state dict at ``path`` could not be loaded (``exc``), as a phrase naming ``path``. Of a file
    that is no checkpoint at all (text, a photo) it says just that: torch's own error on one is noise
    (a text file gives ``KeyError: 101``)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as error:
        return f"cannot read {path} ({os_error_text(error)})"
    if not head.startswith(CHECKPOINT_STARTS) and head[8:9] != b"{":  # safetensors: the header's size in 8 bytes, then its JSON
        return f"{path} is not a PyTorch (.pth, .bin) or safetensors checkpoint"
    return f"cannot read {path} as a checkpoint ({exception_line(exc)})"


def invalid_file(path: object, exc: ValidationError, fix: str, key: str = "") -> InstacliError:
    """pydantic's first complaint about the content of file ``path`` as one line,
    ``PATH: KEY=VALUE: what is wrong; FIX`` (``key`` prefixes the location, e.g. ``scaler``)."""
    first = exc.errors()[0]
    where = ".".join([key, *map(str, first["loc"])]).strip(".") or "its content"
    quoted = first["type"] not in ("missing", "json_invalid") and not isinstance(first["input"], (dict, list))  # not the whole file
    value = f"={first['input']!r}" if quoted else ""
    return InstacliError(f"{path}: {where}{value}: {first['msg'].removeprefix('Value error, ')}; {fix}")
