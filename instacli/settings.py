"""Training settings, resolved as: command-line flag > ``INSTACLI_*`` environment variable > ``--config`` TOML > default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError, TomlConfigSettingsSource

from instacli.errors import InstacliError


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

    model_config = SettingsConfigDict(env_prefix="INSTACLI_", extra="forbid")

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
    image_size: int | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    encoder_lr: float | None = None
    weight_decay: float = 0.05
    warmup_epochs: float = 3.0
    label_smoothing: float = 0.1
    likes_loss: Literal["l1", "huber", "mse"] = "l1"
    likes_weight: float = 1.0
    patience: int = 10
    #: None: the encoder's recommended recipe (its registry entry), else fine-tune end to end.
    freeze_encoder: bool | None = None
    semantic_prior: Literal["auto", "none", "grouped", "raw", "both"] = "auto"
    #: timm.data augmentations on top of crop/flip/jitter (``instacli.augment``); for encoders trained end to end.
    auto_augment: str = "none"
    random_erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    #: A pretrained encoder or a trained run whose embeddings the encoder learns to reproduce (``instacli.distill``).
    distill_from: str | None = None
    distill_weight: float = 1.0
    text: bool = False
    text_encoder: str = "minilm"
    text_options: dict[str, Any] = {}
    text_to_classifier: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    seed: int = 42
    workers: int = 2
    grad_accum: int = 1
    checkpoint_every: int = 0
    time_budget: Annotated[float | None, BeforeValidator(parse_duration)] = None
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


def shown_default(name: str) -> str:
    """The default of setting ``name`` as ``--help`` shows it, read from :class:`TrainSettings` (its one home)."""
    return str(TrainSettings.model_fields[name].default)


def apply_recipe(settings: TrainSettings) -> TrainSettings:
    """Fill the settings the user left unset (``None``) from the encoder's registered recipe."""
    from instacli import registry  # plugins load on the first lookup, not when settings are read

    recipe = {"freeze_encoder": False, **registry.encoders.get(settings.encoder).recipe}  # without one: fine-tune
    unset = {key: value for key, value in recipe.items() if key in TrainSettings.model_fields and getattr(settings, key) is None}
    return settings.model_copy(update=unset)


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
        where = ".".join(str(p) for p in first["loc"]) or "settings"
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
