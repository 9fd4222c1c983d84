"""``instacli explain``: where a photo's category came from, and what drives its predicted likes."""

from __future__ import annotations

import typer

app = typer.Typer()
