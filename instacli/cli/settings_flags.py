"""Command-line flags generated from a pydantic settings model, so that each setting's default and
help have one home: its field (:func:`instacli.settings.setting`).

Every flag defaults to None, "not given", so that the settings' own order holds: flag > ``INSTACLI_*``
environment variable > ``--config`` TOML > the field's default, which ``--help`` shows.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from instacli.settings import parse_options


def _value_type(field: FieldInfo) -> Any:
    """A field's type without ``Optional`` and ``Annotated``: what one value of its flag holds."""
    annotation = field.annotation
    while typing.get_origin(annotation) in (Union, types.UnionType):  # Optional[X] → X
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _option_type(field: FieldInfo) -> Any:
    """The type typer parses a field's flag as: the field's own scalar type, text for choices and
    durations, repeatable ``KEY=VALUE`` text for option dicts, comma-separated text for lists."""
    extra = field.json_schema_extra or {}
    annotation = _value_type(field)
    origin = typing.get_origin(annotation)
    if extra.get("text") or origin is Literal or origin is list:
        return str
    if origin is dict:
        return list[str]
    if annotation in (bool, int, float, str, Path):
        return annotation
    raise TypeError(f"no flag type for setting of type {field.annotation}")


def _choices(field: FieldInfo) -> str:
    """``l1|huber|mse`` for a Literal field, else empty."""
    annotation = field.annotation
    return "|".join(map(str, typing.get_args(annotation))) if typing.get_origin(annotation) is Literal else ""


def _flag_names(field: FieldInfo) -> tuple[str, ...]:
    """The flag names a field asks for (``flag``: one name or several), else none."""
    names = (field.json_schema_extra or {}).get("flag") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _default_text(field: FieldInfo) -> str | bool:
    extra = field.json_schema_extra or {}
    if extra.get("show") is not None:
        return extra["show"]
    return False if field.default is None or extra.get("switch_only") else str(field.default)


def option(name: str, field: FieldInfo) -> inspect.Parameter:
    """The ``typer.Option`` parameter of setting ``name``."""
    extra = field.json_schema_extra or {}
    kind = _option_type(field)
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        decls: tuple[str, ...] = (flag,) if extra.get("switch_only") else (f"{flag}/--no-{flag[2:]}",)
    else:
        decls = _flag_names(field) or (flag,)
    choices = _choices(field)
    help_text = " ".join(filter(None, [field.description, f"One of {choices}." if choices else ""]))
    info = typer.Option(None, *decls, help=help_text, show_default=_default_text(field))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=Optional[kind])


def setting_option(model: type[BaseModel], name: str, note: str = "") -> Any:
    """The flag of one setting for a command that takes only a few of them (``compare``), with the
    field's help (and ``note`` after it) and default."""
    info = option(name, model.model_fields[name]).default
    info.help = " ".join(filter(None, [info.help, note]))
    return info


def from_flags(model: type[BaseModel], given: dict[str, Any]) -> dict[str, Any]:
    """The flags' values as the model's field values (None: not given): option lists parsed as
    ``KEY=VALUE``, lists split at commas."""
    out: dict[str, Any] = {}
    for name, value in given.items():
        field = model.model_fields[name]
        if value is not None and _option_type(field) == list[str]:
            value = parse_options(value, (_flag_names(field) or ("--" + name.replace("_", "-"),))[0])
        elif value is not None and typing.get_origin(_value_type(field)) is list:
            value = [v.strip() for v in value.split(",") if v.strip()]
        out[name] = value
    return out


def with_settings_flags(model: type[BaseModel]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one flag per field of ``model`` besides its own parameters; the command
    receives them, converted (:func:`from_flags`), as one ``settings`` dict."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "settings"]
        generated = [option(name, field) for name, field in model.model_fields.items()]
        names = {p.name for p in generated}

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
            return command(settings=from_flags(model, given), **kwargs)

        params = generated + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer reads the signature above, not the command's own
        return wrapper

    return decorate
