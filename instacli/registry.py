"""Registries of image encoders, likes regressors and text encoders, looked up by name.

Built-ins live in the ``instacli_plugins`` package (the ``plugins/`` folder). Installed third-party
packages add theirs through entry points (groups ``instacli.encoders``, ``instacli.regressors``,
``instacli.text_encoders``); both are discovered lazily on the first lookup, so a name never goes
"unknown" merely because its module was not imported yet.

An entry point may point at a module (whose ``@register_*`` decorators run on import) or at a
factory function (registered under the entry point's name).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from instacli.errors import InstacliError

F = TypeVar("F", bound=Callable[..., Any])

#: Options that the trainer fills in itself; they are not user-facing.
_INTERNAL_OPTIONS = {"embed_dim", "num_features"}


@dataclass
class Entry:
    """One registered factory and what the CLI shows about it."""

    name: str
    kind: str
    factory: Callable[..., Any]
    source: str
    description: str = ""
    pretrained: str | None = None
    input_size: int | None = None
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Training settings this component works best with, used where the user leaves them unset
    #: (e.g. a pretrained encoder's frozen probe with the semantic prior); measured, see README.
    recipe: dict[str, Any] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        """User-facing keyword options of the factory with their defaults (from its signature)."""
        opts = {}
        for p in inspect.signature(self.factory).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _INTERNAL_OPTIONS:
                opts[p.name] = None if p.default is inspect.Parameter.empty else p.default
        return opts


@dataclass
class Registry(Generic[F]):
    """A name → factory table for one kind of component, filled by decorators and entry points."""

    kind: str
    group: str
    entries: dict[str, Entry] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    _discovered: bool = False

    def register(
        self,
        name: str,
        *,
        description: str | None = None,
        pretrained: str | None = None,
        input_size: int | None = None,
        presets: dict[str, dict[str, Any]] | None = None,
        recipe: dict[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Decorator that registers ``factory`` under ``name``.

        ``presets`` are named bundles of options (e.g. ``seed-512``) that ``--preset`` selects;
        ``recipe`` holds the training settings the component defaults to (:attr:`Entry.recipe`).
        """

        def decorator(factory: F) -> F:
            self.add(
                name, factory, description=description, pretrained=pretrained,
                input_size=input_size, presets=presets or {}, recipe=recipe or {},
            )
            return factory

        return decorator

    def add(self, name: str, factory: Callable[..., Any], **meta: Any) -> None:
        """Register ``factory``; a name already taken by another factory is an error naming both."""
        source = f"{factory.__module__}.{factory.__qualname__}"
        old = self.entries.get(name)
        if old is not None:
            if old.factory is factory:
                return
            raise InstacliError(f"{self.kind} name '{name}' is registered twice: by {old.source} and by {source}; rename one of them")
        doc = (inspect.getdoc(factory) or "").strip().splitlines()
        meta["description"] = meta.get("description") or (doc[0] if doc else "")
        self.entries[name] = Entry(name=name, kind=self.kind, factory=factory, source=source, **meta)

    def discover(self) -> None:
        """Import the built-ins and every installed entry point of this registry's group, once."""
        if self._discovered:
            return
        self._discovered = True
        importlib.import_module("instacli_plugins")
        for ep in entry_points(group=self.group):
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.failures[ep.name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"instacli: {self.kind} plugin '{ep.name}' ({ep.value}) failed to import: {exc}", stacklevel=2)
                continue
            if callable(loaded) and not inspect.ismodule(loaded) and ep.name not in self.entries:
                self.add(ep.name, loaded)

    def names(self) -> list[str]:
        self.discover()
        return sorted(self.entries)

    def get(self, name: str) -> Entry:
        self.discover()
        if name in self.entries:
            return self.entries[name]
        if name in self.failures:
            raise InstacliError(f"{self.kind} '{name}' is installed but failed to import ({self.failures[name]}); fix or reinstall that plugin")
        raise InstacliError(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}")

    def resolve_options(self, name: str, preset: str | None = None, **options: Any) -> dict[str, Any]:
        """Merge a named preset with explicit options (explicit ones win)."""
        entry = self.get(name)
        merged: dict[str, Any] = {}
        if preset:
            if preset not in entry.presets:
                known = ", ".join(entry.presets) or "none"
                raise InstacliError(f"{self.kind} '{name}' has no preset '{preset}'; its presets: {known}")
            merged.update(entry.presets[preset])
        merged.update({k: v for k, v in options.items() if v is not None})
        return merged

    def check(self, name: str, options: dict[str, Any]) -> Entry:
        """The entry of ``name`` once its name and option names are known good; else a one-line error.
        Cheap (nothing is built), so a command can check all its components before any work."""
        entry = self.get(name)
        accepted = inspect.signature(entry.factory).parameters
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        unknown = [k for k in options if k not in accepted and not has_var_kw]
        if unknown:
            raise InstacliError(
                f"{self.kind} '{name}' has no option {', '.join(map(repr, unknown))}; "
                f"its options: {', '.join(entry.options()) or 'none'}"
            )
        return entry

    def create(self, name: str, **options: Any) -> Any:
        """Build the component ``name`` with ``options``; unknown options are a one-line error."""
        return self.check(name, options).factory(**options)


encoders: Registry = Registry(kind="encoder", group="instacli.encoders")
regressors: Registry = Registry(kind="regressor", group="instacli.regressors")
text_encoders: Registry = Registry(kind="text encoder", group="instacli.text_encoders")

register_encoder = encoders.register
register_regressor = regressors.register
register_text_encoder = text_encoders.register
