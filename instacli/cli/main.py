"""Entry point of the ``instacli`` command: joins the command modules and turns user errors into one line.

Usage errors (a missing option, a typo'd command, ``--epochs two``) are left to typer's standalone
mode, which prints click's usage message and exits 2 whatever click typer uses (typer 0.26+
vendors its own as ``typer._click``, so catching ``click.ClickException`` here would miss them).
What a command raises is handled in :meth:`InstacliGroup.invoke`, inside typer, so that
``CliRunner`` tests see the same one-line errors and exit codes as the console.
"""

from __future__ import annotations

import inspect
import os
import signal
import warnings
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from instacli import __version__
from instacli.cli import compare, data, demo, evaluate, explain, export, models, predict, serve, train, tune
from instacli.cli.common import err_console
from instacli.errors import InstacliError, os_error_message
from instacli.interrupts import signals_interrupt


class InstacliGroup(TyperGroup):
    """The root command: an :class:`InstacliError` or :class:`OSError` becomes ``error: <message>`` and exit 2; Ctrl-C or
    SIGTERM becomes one line and exit 128 + signal (130 for Ctrl-C), as shells report a killed command.

    Typer would turn ``KeyboardInterrupt`` into a silent exit (0 when not standalone, 130 without a
    word when standalone), so it is caught here, below typer.
    """

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command, with its listing in ``instacli --help`` set to its docstring's first paragraph
        on one line: typer's rich listing kept the docstring's line breaks, cutting sentences mid-way."""
        command = super().get_command(ctx, cmd_name)
        if command is not None and command.short_help is None and command.help:
            command.short_help = " ".join(inspect.cleandoc(command.help).split("\n\n")[0].split())
        return command

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except InstacliError as exc:
            # escaped: a message quoting a regex or a path with [brackets] must print verbatim, not as markup
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # a full disk, a read-only folder, a file where a folder should be: no traceback either
            err_console.print(f"[bold red]error:[/] {escape(os_error_message(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            err_console.print("[bold red]interrupted[/]; nothing half-written was kept", highlight=False)
            raise typer.Exit(128 + signum) from None


app = typer.Typer(
    name="instacli",
    cls=InstacliGroup,
    help="Tell what a post's photo shows and how many likes it will get.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"instacli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Tell what a post's photo shows and how many likes it will get."""


# One module per command (or group), each with its own ``typer.Typer()``; ``data`` and ``models`` are groups.
for command in (data, models):
    app.add_typer(command.app, name=command.__name__.rsplit(".", 1)[-1])
for command in (train, evaluate, predict, serve, export, explain, compare, demo, tune):
    app.add_typer(command.app)


_python_warning_format = warnings.formatwarning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    """instacli's own warnings (an unwritable cache, a plugin that failed to import) as one line, as its
    errors are: Python's format added the file, line number and source line of the code that warned."""
    text = str(message)
    if text.startswith("instacli: "):
        return f"warning: {text.removeprefix('instacli: ')}\n"
    return _python_warning_format(message, category, filename, lineno, line)


def main() -> None:
    """Run the CLI (exits with the command's code; see :class:`InstacliGroup`)."""
    warnings.formatwarning = _one_line_warning
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "GOMP_SPINCOUNT" not in os.environ:  # read once, when torch loads OpenMP: set before any torch import
        # OpenMP threads that spin while they wait collapse as soon as another process (decode workers, a
        # second job) wants the same cores: predict of 2,000 photos on 2 shared cores ran at 59 images/s
        # spinning and 226-258 passive; on idle cores passive costs ≈ 3%.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with signals_interrupt():
        app()
