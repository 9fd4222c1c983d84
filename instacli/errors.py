"""One exception type for everything a user can fix.

The CLI catches :class:`InstacliError` and prints its message as a single line (no traceback),
so every message must name the file or option at fault and say how to fix it.
"""


class InstacliError(Exception):
    """A problem with the user's input or environment, explained in one line."""
