"""Entry point of the ``instacli`` command: assembles the sub-commands and turns user errors into one line."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from instacli.errors import InstacliError

app = typer.Typer(
    name="instacli",
    help="Tell what a post's photo shows and how many likes it will get.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _register_commands() -> None:
    """Import the command modules; each adds itself to ``app``."""
    from instacli.cli import data, demo, evaluate, predict, train  # noqa: F401
    from instacli.cli import compare  # noqa: F401
    from instacli.cli import models  # noqa: F401


def main() -> None:
    """Run the CLI; an :class:`InstacliError` becomes ``error: <message>`` and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "GOMP_SPINCOUNT" not in os.environ:  # read once, when torch loads OpenMP: set before any torch import
        # OpenMP threads that spin while they wait collapse as soon as another process (decode workers, a
        # second job) wants the same cores: predict of 2,000 photos on 2 shared cores ran at 59 images/s
        # spinning and 226-258 passive; on idle cores passive costs ≈ 3%.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _register_commands()
    try:
        app(standalone_mode=False)
    except InstacliError as exc:
        # escaped: a message quoting a regex or a path with [brackets] must print verbatim, not as markup
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]; nothing half-written was kept")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors come through here in standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
