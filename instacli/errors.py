"""One exception type for everything a user can fix.

The CLI catches :class:`InstacliError` and prints its message as a single line (no traceback),
so every message must name the file or option at fault and say how to fix it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class InstacliError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def invalid_file(path: object, exc: ValidationError, fix: str, key: str = "") -> InstacliError:
    """pydantic's first complaint about the content of file ``path`` as one line,
    ``PATH: KEY=VALUE: what is wrong; FIX`` (``key`` prefixes the location, e.g. ``scaler``)."""
    first = exc.errors()[0]
    where = ".".join([key, *map(str, first["loc"])]).strip(".") or "its content"
    quoted = first["type"] not in ("missing", "json_invalid") and not isinstance(first["input"], (dict, list))  # not the whole file
    value = f"={first['input']!r}" if quoted else ""
    return InstacliError(f"{path}: {where}{value}: {first['msg'].removeprefix('Value error, ')}; {fix}")
