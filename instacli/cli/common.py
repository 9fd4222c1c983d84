"""What the command modules share: the consoles and the help of options that several commands take.

It imports nothing of theirs, so that each command module stands alone (``main.py`` joins them).
"""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
#: ``--tta`` of predict and evaluate (the views: :data:`instacli.augment.TTA_DEFAULT`).
TTA_HELP = "Test-time augmentation: average each photo's answer with its mirror image's (2 forward passes per run)."


def per_second(rate: float) -> str:
    """A rate as the summaries print it: whole numbers from 10 up, two significant digits below
    (a slow model scoring 0.3 photos a second printed "0 images/s")."""
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"
