"""Registries of image encoders, likes regressors and text encoders, looked up by name.

Built-ins live in the ``instacli_plugins`` package (the ``plugins/`` folder). Installed third-party
packages add theirs through entry points (groups ``instacli.encoders``, ``instacli.regressors``,
``instacli.text_encoders``); both are discovered lazily on the first lookup, so a name never goes
"unknown" merely because its module was not imported yet.

An entry point may point at a module (whose ``@register_*`` decorators run on import) or at a
factory function (registered under the entry point's name).

Besides names, a registry holds prefixes for open-ended families: a name ``PREFIX:rest`` that is not
registered itself goes to the factory registered for ``PREFIX``, with ``rest`` as its first argument
(``timm:resnet18`` → the timm factory building ``resnet18``). Built-ins register ``timm`` and ``hf``;
a plugin module adds its own with ``@registry.encoders.register_prefix(...)``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import entry_points
from typing import Annotated, Any, Generic, TypeVar

from pydantic import Field, TypeAdapter, ValidationError

from instacli.errors import InstacliError

F = TypeVar("F", bound=Callable[..., Any])
#: The fix :meth:`Registry.create` gives for options that do not fit together (a run's config.json has its own).
FIX_OPTIONS = "fix its options"

#: Values of a ``pretrained`` option meaning random weights (``-E pretrained=false`` arrives as a bool).
RANDOM_WEIGHTS = frozenset({"none", "false"})

#: Options that the trainer or a saved run fills in itself; they are not user-facing.
_INTERNAL_OPTIONS = {"embed_dim", "num_features", "imagenet_head"}

# Types for the options of plugin factories: a factory annotates its parameters with them (or any
# pydantic-understood ``Annotated``/``Literal`` type) and the registry refuses a value outside them.
#: The largest input size: the decode cache holds 3 × size² bytes per photo (3 MB at 1024 px).
MAX_IMAGE_SIZE = 1024
#: Input side in pixels; below 16 px a photo has nothing left to show.
ImageSize = Annotated[int, Field(ge=16, le=MAX_IMAGE_SIZE)]
#: A count or width of at least 1 (layers, heads, channels, batch sizes).
Count = Annotated[int, Field(ge=1)]
#: A probability of dropping (dropout, stochastic depth): 1 would drop everything.
DropRate = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
#: A finite number above 0 (learning rates, ratios).
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


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
    #: For a prefixed name (``timm:resnet18``): what follows the prefix, the factory's first
    #: (positional-only) argument. None for a plain name, and for a prefix's own entry.
    argument: str | None = None

    def build(self, **options: Any) -> Any:
        """Call the factory with ``options`` (and the prefixed name's ``argument`` first)."""
        return self.factory(**options) if self.argument is None else self.factory(self.argument, **options)

    def options(self) -> dict[str, Any]:
        """User-facing keyword options of the factory with their defaults (from its signature)."""
        opts = {}
        for p in inspect.signature(self.factory).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _INTERNAL_OPTIONS:
                opts[p.name] = None if p.default is inspect.Parameter.empty else p.default
        return opts

    def random_weights(self, options: dict[str, Any]) -> bool:
        """Whether the component built with ``options`` starts from random weights: its ``pretrained``
        option (given, or its default) is one of :data:`RANDOM_WEIGHTS`; without such an option, whether
        it was registered without pretrained weights (``hf:`` and ``minilm`` load a checkpoint although
        they take no ``pretrained``)."""
        defaults = self.options()
        if "pretrained" in defaults:
            return str(options.get("pretrained", defaults["pretrained"])).lower() in RANDOM_WEIGHTS
        return self.pretrained is None

    @cached_property
    def option_types(self) -> dict[str, TypeAdapter]:
        """A validator per annotated option of the factory, from its type hints (``Annotated`` bounds,
        ``Literal`` choices included), so that a bad value is refused before anything is built."""
        try:
            hints = typing.get_type_hints(self.factory, include_extras=True)
        except Exception:  # noqa: BLE001 — a plugin's unresolvable annotation: its option names are still checked
            return {}
        return {name: TypeAdapter(hint) for name, hint in hints.items() if name != "return"}

    def validate(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` checked and converted by their annotations (JSON's lists become tuples, ...);
        a bad value is a one-line error naming the option and what it accepts."""
        valid = dict(options)
        for key, value in options.items():
            if key in self.option_types:
                try:
                    valid[key] = self.option_types[key].validate_python(value)
                except ValidationError as exc:
                    # of a union's failed branches, the one that got deepest says most ([8, -1]: -1 is too small)
                    problem = max(exc.errors(), key=lambda error: len(error["loc"]))["msg"]
                    raise InstacliError(f"{self.kind} '{self.name}' option {key}={value!r}: {problem}") from None
        return valid


@dataclass
class Registry(Generic[F]):
    """A name → factory table for one kind of component, filled by decorators and entry points."""

    kind: str
    group: str
    #: ``module:Class`` every built component is an instance of (imported when first needed: the
    #: base classes import torch, the registry must not).
    contract: str
    entries: dict[str, Entry] = field(default_factory=dict)
    #: Factories of prefixed names, by prefix (``timm`` for ``timm:resnet18``); see the module docstring.
    prefixes: dict[str, Entry] = field(default_factory=dict)
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

    def register_prefix(
        self, prefix: str, *, description: str | None = None, pretrained: str | None = None, recipe: dict[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Decorator that makes ``factory`` build every name ``prefix:rest`` (``rest`` passed first,
        positional-only); its keyword options work as a named factory's."""

        def decorator(factory: F) -> F:
            self.add(prefix, factory, table=self.prefixes, description=description, pretrained=pretrained, recipe=recipe or {})
            return factory

        return decorator

    def add(self, name: str, factory: Callable[..., Any], table: dict[str, Entry] | None = None, **meta: Any) -> None:
        """Register ``factory`` under ``name`` in ``table`` (the names, or the prefixes); a name already
        taken by another factory is an error naming both."""
        table = self.entries if table is None else table
        source = f"{factory.__module__}.{factory.__qualname__}"
        old = table.get(name)
        if old is not None:
            if old.factory is factory:
                return
            raise InstacliError(f"{self.kind} name '{name}' is registered twice: by {old.source} and by {source}; rename one of them")
        doc = (inspect.getdoc(factory) or "").strip().splitlines()
        meta["description"] = meta.get("description") or (doc[0] if doc else "")
        table[name] = Entry(name=name, kind=self.kind, factory=factory, source=source, **meta)

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

    def prefix_names(self) -> list[str]:
        """The registered prefixes as names look with them: ``timm:NAME``."""
        self.discover()
        return [f"{prefix}:NAME" for prefix in sorted(self.prefixes)]

    def knows(self, name: str) -> bool:
        """Whether ``name`` is registered or has a registered prefix (without building or checking anything)."""
        self.discover()
        prefix, sep, _ = name.partition(":")
        return name in self.entries or bool(sep and prefix in self.prefixes)

    def get(self, name: str) -> Entry:
        self.discover()
        if name in self.entries:
            return self.entries[name]
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self.prefixes:
            if not rest.strip():
                raise InstacliError(f"{self.kind} '{name}': give a name after the prefix, {prefix}:NAME ({self.prefixes[prefix].description})")
            return dataclasses.replace(self.prefixes[prefix], name=name, argument=rest)
        if name in self.failures:
            raise InstacliError(f"{self.kind} '{name}' is installed but failed to import ({self.failures[name]}); fix or reinstall that plugin")
        prefixed = f"; or {', '.join(self.prefix_names())}" if self.prefixes else ""
        raise InstacliError(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}{prefixed}")

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

    def check(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` of ``name`` once the name, the option names and their values are known good
        (converted by :meth:`Entry.validate`); else a one-line error. Cheap (nothing is built), so a
        command can check all its components before any work."""
        entry = self.get(name)
        accepted = {n: p for n, p in inspect.signature(entry.factory).parameters.items() if p.kind is not p.POSITIONAL_ONLY}
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        unknown = [k for k in options if k not in accepted and not has_var_kw]
        if unknown:
            raise InstacliError(
                f"{self.kind} '{name}' has no option {', '.join(map(repr, unknown))}; "
                f"its options: {', '.join(entry.options()) or 'none'}"
            )
        return entry.validate(options)

    def create(self, name: str, **options: Any) -> Any:
        """Build the component ``name`` with ``options``; unknown or out-of-range options are a one-line
        error, and so is a combination the factory refuses with ``ValueError`` (e.g. an image size that
        is not a multiple of the patch size), and one too large for the memory."""
        valid = self.check(name, options)
        entry = self.get(name)
        check_weights_fit(f"{self.kind} '{name}'", entry, valid, options)
        try:
            built = entry.build(**valid)
        except ValueError as exc:
            raise InstacliError(f"{self.kind} '{name}': {str(exc).strip().splitlines()[0]}; {FIX_OPTIONS}") from None
        except (MemoryError, RuntimeError) as exc:  # -E width=100000: torch cannot allocate 45 GB of weights (a traceback before)
            if not isinstance(exc, MemoryError) and not any(words in str(exc) for words in ("can't allocate memory", "bad_alloc")):
                raise
            raise InstacliError(f"{self.kind} '{name}'{_given(options)}: its weights do not fit in this machine's memory; choose smaller options") from None
        base = self.base_class()
        if not isinstance(built, base):
            raise InstacliError(
                f"{self.kind} '{name}' ({entry.source}) built a {type(built).__name__}, not a {base.__module__}.{base.__name__}; "
                "the plugin must return a subclass of it"
            )
        return built

    def base_class(self) -> type:
        """The class every component of this kind derives from (:attr:`contract`)."""
        module, _, name = self.contract.partition(":")
        return getattr(importlib.import_module(module), name)


def _given(options: dict[str, Any]) -> str:
    """`` (key=value, …)`` of the options the user gave, for an error line; empty without any."""
    return f" ({', '.join(f'{key}={value}' for key, value in options.items())})" if options else ""


def check_weights_fit(who: str, entry: Entry, valid: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse, in one line, a component with random weights whose weights alone exceed the memory available.

    ``-E width=20000`` asks vit-scratch for 22 billion weights (87 GB) in allocations that each fit,
    and the kernel killed the process without a word. So a component without ``pretrained`` weights
    is first built on the meta device, which allocates nothing, and its weights counted. Only those:
    their options set the size freely, and a pretrained build (a fixed architecture) could download.
    A factory that cannot build on the meta device is built for real, as before.
    """
    if not entry.random_weights(valid):
        return
    import psutil
    import torch

    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            count = sum(p.numel() for p in entry.build(**valid).parameters())
    except Exception:  # noqa: BLE001 — whatever the meta build refuses, the real build decides
        return
    available = psutil.virtual_memory().available
    if count * 4 > available:
        raise InstacliError(
            f"{who}{_given(given)}: its {count:,} weights need {count * 4 / 2**30:,.1f} GiB, "
            f"more than the {available / 2**30:,.1f} GiB of memory available; choose smaller options"
        )


encoders: Registry = Registry(kind="encoder", group="instacli.encoders", contract="instacli.encoders:ImageEncoder")
regressors: Registry = Registry(kind="regressor", group="instacli.regressors", contract="instacli.regressors:LikesRegressor")
text_encoders: Registry = Registry(kind="text encoder", group="instacli.text_encoders", contract="instacli.text:TextEncoder")

register_encoder = encoders.register
register_encoder_prefix = encoders.register_prefix
register_regressor = regressors.register
register_text_encoder = text_encoders.register
