"""``instacli models list`` and ``instacli models show NAME``: what can be plugged in, and how.

Parameter counts come from building each encoder's and regressor's default configuration with
random weights (``pretrained=None`` where the factory has that option; regressors for a 128-d
embedding and 3 numbers), so listing never loads or downloads weights. Text encoders are frozen
pretrained models that cannot be built without their weights, so they are listed but not built.
Prefixes (``timm:NAME``, ``hf:ID_OR_FOLDER``) are listed as one row each, not built: what they
build depends on the name after the prefix (``models show timm:resnet50`` shows their options).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.console import Console
from rich.table import Table

from instacli import registry
from instacli.errors import InstacliError
from instacli.registry import Entry, Registry

app = typer.Typer(help="Image encoders, likes regressors and text encoders you can plug in.", no_args_is_help=True)
console = Console()

REGISTRIES: tuple[Registry, ...] = (registry.encoders, registry.regressors, registry.text_encoders)
#: What a regressor is built for when its parameters are counted.
REGRESSOR_INPUTS = dict(embed_dim=128, num_features=3)


@dataclass
class Summary:
    """One row of ``models list``; ``problem`` says why the default could not be built."""

    entry: Entry
    parameters: int | None = None
    input_size: int | None = None
    problem: str | None = None


def summarize(entry: Entry) -> Summary:
    """Build ``entry``'s default with random weights to count its parameters and read its input size.

    Text encoders, and components that declare a pretrained source but offer no ``pretrained``
    option to turn it off, are not built: that would load (or download) weights.
    """
    from instacli.model import parameter_count

    has_switch = "pretrained" in entry.options()
    if entry.kind == registry.text_encoders.kind or (entry.pretrained and not has_switch):
        return Summary(entry, input_size=entry.input_size)
    options: dict[str, Any] = {"pretrained": None} if has_switch else {}
    if entry.kind == registry.regressors.kind:
        options.update(REGRESSOR_INPUTS)
    try:
        model = entry.factory(**options)
    except Exception as exc:  # one broken plugin must not hide the others
        return Summary(entry, input_size=entry.input_size, problem=f"default failed to build: {type(exc).__name__}: {exc}")
    preprocess = getattr(model, "preprocess", None)
    return Summary(
        entry,
        parameters=parameter_count(model),
        input_size=preprocess.image_size if preprocess is not None else entry.input_size,
    )


def find(name: str) -> list[Entry]:
    """Every registered component called ``name`` (an encoder and a text encoder may share one)."""
    found = [reg.get(name) for reg in REGISTRIES if reg.knows(name)]
    if found:
        return found
    for reg in REGISTRIES:
        if name in reg.failures:
            reg.get(name)  # raises the "installed but failed to import" error
    known = sorted({n for reg in REGISTRIES for n in reg.names()})
    raise InstacliError(f"unknown model '{name}'; known: {', '.join(known)} (see `instacli models list`)")


def _count(summary: Summary) -> str:
    """``3.4M``-style parameter count; ``?`` when the build failed, ``—`` when it was not attempted."""
    n = summary.parameters
    if n is None:
        return "?" if summary.problem else "—"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


@app.command("list")
def list_models() -> None:
    """Every encoder, regressor and text encoder, with its size and where pretrained weights come from."""
    table = Table(title="instacli models", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("input", justify="right", no_wrap=True)
    table.add_column("pretrained", ratio=1)
    table.add_column("description", ratio=2)
    notes = []
    for reg in REGISTRIES:
        for name in reg.names():
            row = summarize(reg.entries[name])
            table.add_row(
                name, reg.kind, _count(row), str(row.input_size or "—"), escape(row.entry.pretrained or "—"), escape(row.entry.description)
            )
            if row.problem:
                notes.append(f"{reg.kind} '{name}': {row.problem}")
        for name, entry in zip(reg.prefix_names(), (reg.prefixes[prefix] for prefix in sorted(reg.prefixes))):
            table.add_row(name, reg.kind, "—", "—", escape(entry.pretrained or "—"), escape(entry.description))
        notes += [f"{reg.kind} plugin '{name}' failed to import: {why}" for name, why in reg.failures.items()]
    console.print(table)
    console.print(
        "params: default configuration with random weights (—: not built, it needs its weights or a name after its prefix); "
        "input: image side in pixels",
        style="dim", highlight=False,
    )
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="Name from `instacli models list`.")]) -> None:
    """A component's options with their defaults, its presets and the module it comes from."""
    for entry in find(name):
        console.print(f"[bold]{entry.name}[/] ({entry.kind}) — {escape(entry.description)}", highlight=False)
        details = (inspect.getdoc(entry.factory) or "").removeprefix(entry.description).strip()
        if details:
            console.print(escape(re.sub(r"(?<!\n)\n(?!\n)", " ", details)), style="dim", highlight=False)
        console.print(f"source: {entry.source}", highlight=False)
        console.print(f"pretrained: {entry.pretrained or '—'}", highlight=False)
        if entry.input_size:
            console.print(f"input size: {entry.input_size} px", highlight=False)
        options = Table(title="options", title_justify="left")
        options.add_column("option")
        options.add_column("default")
        for option, default in entry.options().items():
            options.add_row(option, repr(default))
        console.print(options)
        if entry.presets:
            presets = Table(title="presets (--preset NAME)", title_justify="left")
            presets.add_column("preset")
            presets.add_column("options", overflow="fold")
            for preset, values in entry.presets.items():
                presets.add_row(preset, ", ".join(f"{k}={v!r}" for k, v in values.items()))
            console.print(presets)
