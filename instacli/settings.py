"""Training settings, resolved as: command-line flag > ``INSTACLI_*`` environment variable > ``--config`` TOML > default."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, NonNegativeFloat, NonNegativeInt, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError, TomlConfigSettingsSource

from instacli.errors import InstacliError
from instacli.registry import Count, ImageSize, PositiveFloat


def parse_duration(text: str | float | int | None) -> float | None:
    """``"10m"``, ``"90s"``, ``"1h30m"``, ``"600"`` → seconds (``--time-budget`` of train and compare, TOML, env)."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    clean = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", clean):
        return float(clean)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", clean)
    if not parts or "".join(n + u for n, u in parts) != clean:
        raise InstacliError(f"time budget {text!r}: expected a duration like 600, 90s, 10m or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


class TrainSettings(BaseSettings):
    """Everything ``instacli train`` accepts. Defaults are measured on real photos (see README)."""

    # Bounds: a value outside them is refused in one line before any data is read (NaN and
    # infinity too: ``--lr nan`` trained a model of NaNs).
    model_config = SettingsConfigDict(env_prefix="INSTACLI_", extra="forbid", allow_inf_nan=False)

    data: Path
    out: Path | None = None
    encoder: str = "vit-scratch"
    preset: str | None = None
    encoder_options: dict[str, Any] = {}
    pretrained: str | None = None
    regressor: str = "conv1d"
    regressor_options: dict[str, Any] = {}
    task: Literal["auto", "both", "category", "likes"] = "auto"
    features: list[str] | None = None
    image_size: ImageSize | None = None
    epochs: Count = 30
    batch_size: Count = 64
    lr: PositiveFloat = 2e-3
    encoder_lr: PositiveFloat | None = None
    weight_decay: NonNegativeFloat = 0.05
    warmup_epochs: NonNegativeFloat = 3.0
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.1
    likes_loss: Literal["l1", "huber", "mse"] = "l1"
    likes_weight: NonNegativeFloat = 1.0
    patience: Count = 10
    #: None: the encoder's recommended recipe (its registry entry), else fine-tune end to end.
    freeze_encoder: bool | None = None
    semantic_prior: Literal["auto", "none", "grouped", "raw", "both"] = "auto"
    #: LP-FT: with a trained encoder, fit the category head as the frozen encoder's linear probe first
    #: (``instacli.probe``), then fine-tune everything from there.
    probe_first: bool = False
    #: timm.data augmentations on top of crop/flip/jitter (``instacli.augment``); for encoders trained end to end.
    auto_augment: str = "none"
    random_erasing: Annotated[float, Field(ge=0, le=1)] = 0.0
    mixup: NonNegativeFloat = 0.0
    cutmix: NonNegativeFloat = 0.0
    #: Colour invariance for encoders trained end to end (``instacli.augment.train_view``): the largest
    #: hue rotation of a training photo, in turns (0.5: any hue), and the share of them turned gray.
    hue: Annotated[float, Field(ge=0, le=0.5)] = 0.0
    grayscale: Annotated[float, Field(ge=0, le=1)] = 0.0
    #: A pretrained encoder or a trained run that teaches the category head its answers (``instacli.distill``).
    distill_from: str | None = None
    distill_weight: NonNegativeFloat = 1.0
    text: bool = False
    text_encoder: str = "minilm"
    text_options: dict[str, Any] = {}
    text_to_classifier: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42  # numpy's seeds
    workers: NonNegativeInt = 2
    grad_accum: Count = 1
    checkpoint_every: NonNegativeInt = 0
    time_budget: Annotated[PositiveFloat | None, BeforeValidator(parse_duration)] = None
    compile: bool = False
    overwrite: bool = False
    resume: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if toml_file:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml_file),)
        return sources


def check_flag(flag: str, value: Any, kind: Any) -> Any:
    """``value`` of the command-line option ``flag`` validated as ``kind`` (e.g. :data:`Count`), for
    commands without a settings model (predict, evaluate); out of range is a one-line error."""
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        raise InstacliError(f"{flag} {value!r}: {exc.errors()[0]['msg']}") from None


def option_value(text: str) -> Any:
    """A ``KEY=VALUE`` option's value as JSON when it parses (``128``, ``true``, ``[8, 4]``), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(pairs: list[str] | None, flag: str) -> dict[str, Any] | None:
    """``["width=128", "pool=cls"]`` → ``{"width": 128, "pool": "cls"}`` (``-E``/``-R``/``--text-option`` of train)."""
    if not pairs:
        return None
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InstacliError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {flag} width=128")
        options[key.strip().replace("-", "_")] = option_value(value)
    return options


def shown_default(name: str) -> str:
    """The default of setting ``name`` as ``--help`` shows it, read from :class:`TrainSettings` (its one home)."""
    return str(TrainSettings.model_fields[name].default)


def apply_recipe(settings: TrainSettings) -> TrainSettings:
    """Fill the settings the user left unset (``None``) from the encoder's registered recipe.

    A recipe that freezes the encoder is for its pretrained weights: with ``--pretrained none``
    (random weights) a frozen encoder would give the heads noise, so such an encoder is trained.
    """
    from instacli import registry  # plugins load on the first lookup, not when settings are read

    recipe = {"freeze_encoder": False, **registry.encoders.get(settings.encoder).recipe}  # without one: fine-tune
    options = encoder_options(settings)
    if "pretrained" in options and str(options["pretrained"]).lower() == "none":
        recipe["freeze_encoder"] = False
    unset = {key: value for key, value in recipe.items() if key in TrainSettings.model_fields and getattr(settings, key) is None}
    return settings.model_copy(update=unset)


def encoder_options(settings: TrainSettings) -> dict[str, Any]:
    """The encoder's options: its ``--preset``, then ``-E`` options, then the first-class flags
    ``--image-size`` and ``--pretrained`` (each later one wins)."""
    from instacli import registry

    flags = {key: getattr(settings, key) for key in ("image_size", "pretrained") if getattr(settings, key) is not None}
    return registry.encoders.resolve_options(settings.encoder, settings.preset, **{**settings.encoder_options, **flags})


def check_components(settings: TrainSettings) -> None:
    """Unknown encoder, preset, regressor or text encoder names, and their options' names and values
    (from each factory's signature), fail here in one line: before any data is read, and in
    ``compare`` before the first of several runs trains."""
    from instacli import registry

    registry.encoders.check(settings.encoder, encoder_options(settings))
    registry.regressors.check(settings.regressor, settings.regressor_options)
    if settings.text:
        registry.text_encoders.check(settings.text_encoder, settings.text_options)


def load_settings(config: Path | None = None, **flags: Any) -> TrainSettings:
    """Resolve settings from flags given on the command line (``None`` = not given), env and a TOML file."""
    given = {k: v for k, v in flags.items() if v is not None}
    cls: type[TrainSettings] = TrainSettings
    if config is not None:
        if not config.is_file():
            raise InstacliError(f"{config}: config file not found; pass an existing TOML file to --config")

        class FromFile(TrainSettings):
            model_config = SettingsConfigDict(env_prefix="INSTACLI_", extra="forbid", toml_file=config)

        cls = FromFile
    try:
        return cls(**given)
    except InstacliError:  # e.g. a --time-budget that is not a duration
        raise
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][0]) if first["loc"] else "settings"
        if not isinstance(first["input"], (dict, list)):  # a value worth quoting, not the whole settings
            where += f"={first['input']!r}"
        source = f" (in {config})" if config else ""
        raise InstacliError(f"{where}: {first['msg']}{source}; see `instacli train --help`") from None
    except SettingsError as exc:  # a dict or list setting from the environment that is not JSON
        field = re.search(r'field "(\w+)" from source "EnvSettingsSource"', str(exc))
        if field is None:
            raise InstacliError(f"{config}: cannot read settings ({exc}); fix the TOML file") from None
        variable = f"INSTACLI_{field.group(1).upper()}"
        raise InstacliError(f"{variable}: not valid JSON ({exc.__cause__ or exc}); write it as JSON, e.g. {{\"width\": 128}} "
                            "or [\"comments\"], or unset it") from None
    except Exception as exc:  # e.g. a TOML syntax error
        raise InstacliError(f"{config}: cannot read settings ({exc}); fix the TOML file") from None
