"""Ctrl-C and SIGTERM that cannot be lost.

Python raises a signal's exception wherever the main thread happens to be. When that is a finalizer
(``__del__``, e.g. a DataLoader iterator shutting its workers down at the end of an epoch) or a
callback run by the garbage collector, the exception is printed as "Exception ignored" and dropped:
a Ctrl-C at that moment left ``instacli train`` running its next epoch. So the CLI's handler
(:func:`signals_interrupt`) also records the signal, and the long loops call :func:`check` at points
where raising is safe (train, predict, evaluate: every batch; data build: every photo), which raises it
again if it was swallowed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: The signals received by this process and not yet raised where they could not be dropped.
_pending: list[int] = []


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal; a ``KeyboardInterrupt`` so that every cleanup written for
    Ctrl-C (atomic outputs, checkpoints) runs for SIGTERM too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def check() -> None:
    """Raise the signal a finalizer swallowed, if any (a no-op outside :func:`signals_interrupt`)."""
    if _pending:
        raise Interrupted(_pending.pop())


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """While the CLI runs, SIGINT and SIGTERM (``kill``, a scheduler, ``timeout``) raise
    :class:`Interrupted`: temp outputs are removed and the exit code says which signal stopped it.
    Forked children (decode pools, loader workers) inherit the handler; there SIGTERM kills them as
    before and SIGINT raises a plain ``KeyboardInterrupt``, as their parents expect."""
    pid = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != pid:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _pending[:] = [signum]
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        _pending.clear()
