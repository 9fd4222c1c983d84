"""Training settings, resolved as: command-line flag > ``INSTACLI_*`` environment variable > ``--config`` TOML > default."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError, TomlConfigSettingsSource

from instacli.errors import InstacliError
from instacli.photo_files import not_a_file
from instacli.registry import Count, ImageSize, PositiveFloat

# Defaults of scoring, shared by the commands' flags and the library functions they call.
#: Photos per forward pass of ``predict`` (also ``instacli.load(...).predict`` and ``--engine ray``).
PREDICT_BATCH_SIZE = 64
#: Photos per forward pass of ``evaluate``, whose split is already decoded: only the model's memory bounds it.
EVALUATE_BATCH_SIZE = 128
#: Photos per forward pass when scoring: a batch holds that many decoded squares (0.2 MB each at 256 px)
#: and the network's activations for them (tens of MB each for the larger encoders), so
#: ``predict --batch-size 1000000`` on a big folder exhausted memory; 4,096 is far past where a CPU
#: or GPU batch stops getting faster.
ScoringBatch = Annotated[int, Field(ge=1, le=4096)]
#: DataLoader processes that decode photos beside the model (``prediction.decode_workers`` keeps a core for the model).
DECODE_WORKERS = 2
#: A learning rate of AdamW: above 1 it only diverges (``--lr 1e39`` overflowed float32 inside the optimizer: a traceback).
LearningRate = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, a container's cpuset). Decoding
    is CPU-bound, so more decode processes than cores only queue; ``--workers 100000`` started them all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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



def setting(default: Any, help: str, **cli: Any) -> Any:
    """A :class:`TrainSettings` field: its default and its help, the one home of both (the train
    command's flags are generated from them, :mod:`instacli.cli.settings_flags`). ``cli`` says how
    the flag differs from ``--field-name``: ``flag`` (its names), ``show`` (the default as help
    shows it, False: none), ``switch_only`` (``--x`` without ``--no-x``), ``text`` (read as text)."""
    return Field(default, description=help, json_schema_extra=cli or None)


class TrainSettings(BaseSettings):
    """Everything ``instacli train`` accepts. Defaults are measured on real photos (see README)."""

    # Bounds: a value outside them is refused in one line before any data is read (NaN and
    # infinity too: ``--lr nan`` trained a model of NaNs).
    model_config = SettingsConfigDict(env_prefix="INSTACLI_", extra="forbid", allow_inf_nan=False)

    data: Path = setting(..., "Dataset folder from `instacli data build` (needed unless --resume, which reads the run's settings).",
                         flag="--data", show=False, required_on_cli=False)
    out: Path | None = setting(None, "Run folder to create.", flag="--out", show="runs/<encoder>-<time>")
    encoder: str = setting("vit-scratch", "Image encoder: a name from `instacli models list`, timm:MODEL (any timm model, "
                                          "e.g. timm:resnet50) or hf:ID_OR_FOLDER (a transformers image backbone).")
    preset: str | None = setting(None, "Named encoder preset, e.g. seed-512 (the original design).")
    encoder_options: dict[str, Any] = setting({}, "Encoder option KEY=VALUE (repeatable).", flag=("--encoder-option", "-E"), show=False)
    pretrained: str | None = setting(None, "Pretrained weights for the encoder: hub id, local path, 'imagenet', or for "
                                           "timm:MODEL 'true' (timm's own, downloaded once) or a local checkpoint.")
    regressor: str = setting("conv1d", "Likes regressor name.")
    regressor_options: dict[str, Any] = setting({}, "Regressor option KEY=VALUE (repeatable).", flag=("--regressor-option", "-R"), show=False)
    task: Literal["auto", "both", "category", "likes"] = setting("auto", "What to learn; auto trains what the data supports.")
    features: list[str] | None = setting(None, "Numeric inputs, comma-separated (comments,shares,followers).", show="all present")
    image_size: ImageSize | None = setting(None, "Override the encoder's input size.")
    epochs: Count = setting(30, "Maximum epochs (early stopping may end sooner).")
    batch_size: Count = setting(64, "Images per batch and process.")
    lr: LearningRate = setting(2e-3, "Peak learning rate of AdamW.")
    encoder_lr: LearningRate | None = setting(None, "Separate learning rate for the encoder (fine-tuning).", show="--lr")
    weight_decay: NonNegativeFloat = setting(0.05, "AdamW weight decay.")
    warmup_epochs: NonNegativeFloat = setting(3.0, "Epochs of linear learning-rate warm-up before the cosine decay.")
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = setting(0.1, "Label smoothing of the category loss.")
    likes_loss: Literal["l1", "huber", "mse"] = setting("l1", "Loss on standardized log1p(likes).")
    likes_weight: NonNegativeFloat = setting(1.0, "Weight w in loss = CE + w·likes loss.")
    patience: Count = setting(10, "Epochs without validation-loss improvement before stopping, counted in the second half of --epochs.")
    #: None: the encoder's recommended recipe (its registry entry), else fine-tune end to end.
    freeze_encoder: bool | None = setting(None, "Train the heads only on cached embeddings.",
                                          show="the encoder's recipe: frozen for efficientnet-lite0")
    semantic_prior: Literal["auto", "none", "grouped", "raw", "both"] = setting(
        "auto", "What the category head reads of a pretrained ImageNet head; auto: the encoder's recipe.")
    #: LP-FT: with a trained encoder, fit the category head as the frozen encoder's linear probe first
    #: (``instacli.probe``), then fine-tune everything from there.
    probe_first: bool = setting(False, "LP-FT: fit the category head as a linear probe on the frozen encoder, then fine-tune "
                                       "everything (with --no-freeze-encoder).", switch_only=True)
    #: timm.data augmentations on top of crop/flip/jitter (``instacli.augment``); for encoders trained end to end.
    auto_augment: str = setting("none", "timm auto-augment policy for encoders trained end to end: none|randaugment|trivialaugment "
                                        "or a timm string (rand-m9-mstd0.5, augmix-m5, original).")
    random_erasing: Annotated[float, Field(ge=0, le=1)] = setting(0.0, "Probability of timm random erasing per photo.")
    mixup: NonNegativeFloat = setting(0.0, "timm mixup alpha (0 = off; --task category only: a blend has no likes count).")
    cutmix: NonNegativeFloat = setting(0.0, "timm cutmix alpha (0 = off; --task category only).")
    #: Colour invariance for encoders trained end to end (``instacli.augment.train_view``).
    hue: Annotated[float, Field(ge=0, le=0.5)] = setting(
        0.0, "Largest random hue rotation of a training photo, in turns (0.5: any hue); for encoders trained end to end.")
    grayscale: Annotated[float, Field(ge=0, le=1)] = setting(
        0.0, "Probability of turning a training photo gray; for encoders trained end to end.")
    #: A pretrained encoder or a trained run whose answers on unlabelled photos the model also learns (``instacli.distill``).
    distill_from: str | None = setting(None, "Teacher whose answers on unlabelled transfer photos (--distill-photos) the model also "
                                             "learns: a trained run folder or an encoder name (e.g. efficientnet-lite0). See README.")
    distill_photos: list[str] = setting(["bundled"], "Unlabelled photos the teacher answers for, comma-separated folders; bundled: "
                                                    "the 124 varied CC0 photos instacli ships.")
    distill_weight: NonNegativeFloat = setting(1.0, "Weight of the teacher's answers on the transfer photos beside the labels in the category loss.")
    text: bool = setting(False, "Use captions as a third input (frozen text encoder).")
    text_encoder: str = setting("minilm", "Caption encoder name (minilm is bundled, works offline).")
    text_options: dict[str, Any] = setting({}, "Text encoder option KEY=VALUE, e.g. pretrained=bert-base-uncased.", flag=("--text-option",), show=False)
    text_to_classifier: bool = setting(False, "Feed captions to the category head too.", switch_only=True)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = setting("auto", "auto picks bf16 where the hardware is fast at it.")
    seed: Annotated[int, Field(ge=0, lt=2**32)] = setting(42, "Random seed.")  # numpy's seeds
    workers: NonNegativeInt = setting(2, "Processes that decode images.")
    grad_accum: Count = setting(1, "Gradient accumulation steps.")
    checkpoint_every: NonNegativeInt = setting(0, "Also checkpoint every N optimizer steps for --resume (0 = at epoch ends only).")
    time_budget: Annotated[PositiveFloat | None, BeforeValidator(parse_duration)] = setting(
        None, "Training time, e.g. 600, 90s, 10m, 1h30m (checked after each epoch).", text=True)
    report_to: list[Literal["tensorboard", "mlflow", "trackio", "wandb"]] = setting(
        [], "Experiment trackers, comma-separated: tensorboard (event files in RUN/logs), mlflow (to MLFLOW_TRACKING_URI), "
            "trackio, wandb. Each gets the settings, per-step loss and learning rate, per-epoch metrics and the curves.", show="none")
    compile: bool = setting(False, "torch.compile the model.")
    overwrite: bool = setting(False, "Replace an existing run at --out.", switch_only=True)
    resume: bool = setting(False, "Continue the run at --out from its last checkpoint.", switch_only=True)

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


class ServeLimits(BaseModel):
    """What ``instacli serve`` accepts in one request and how it batches requests (:mod:`instacli.serve`).

    Here, not in :mod:`instacli.serve`, so that the CLI shows the defaults without importing FastAPI."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    #: Largest photo (megabytes), refused while it is still arriving.
    max_file_mb: PositiveFloat = 20.0
    #: Most photos in one request.
    max_files: Count = 16
    #: Most photos in one forward pass, gathered from concurrent requests.
    max_batch: ScoringBatch = 32
    #: How long a photo waits for others to share its forward pass (milliseconds): small next to a forward pass.
    max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 5.0

    @classmethod
    def from_flags(cls, **values: Any) -> ServeLimits:
        """The limits, a value out of range being a one-line error naming its option (``--max-files 0: ...``)."""
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InstacliError(f"--{str(first['loc'][0]).replace('_', '-')} {first['input']!r}: {first['msg']}") from None


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


def apply_recipe(settings: TrainSettings) -> TrainSettings:
    """Fill the settings the user left unset (``None``) from the encoder's registered recipe.

    A recipe that freezes the encoder is for its pretrained weights: with random ones (``--pretrained
    none``, or an encoder such as ``timm:`` whose default is random) a frozen encoder would give the
    heads noise, so such an encoder is trained.
    """
    from instacli import registry  # plugins load on the first lookup, not when settings are read

    entry = registry.encoders.get(settings.encoder)
    recipe = {"freeze_encoder": False, **entry.recipe}  # without one: fine-tune
    if entry.random_weights(encoder_options(settings)):
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
        if problem := not_a_file(config):
            raise InstacliError(f"{config}: {problem}; pass a TOML file to --config")

        class FromFile(TrainSettings):
            model_config = SettingsConfigDict(env_prefix="INSTACLI_", extra="forbid", toml_file=config)

        cls = FromFile
    try:
        settings = cls(**given)
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
    if config is not None:
        _name_the_file_of_a_bad_component(settings, config, given)
    return settings


def _name_the_file_of_a_bad_component(settings: TrainSettings, config: Path, flags: dict[str, Any]) -> None:
    """An unknown encoder, option or value that the ``--config`` file brought is one line naming the file
    (the same line without it sent the user looking through the flags); one the flags bring is left as it is."""
    try:
        check_components(settings)
    except InstacliError as exc:
        try:
            # the file's data folder too: a file that sets it left the flags alone invalid (data is required)
            check_components(TrainSettings(**{"data": settings.data, **flags}))
        except Exception:  # noqa: BLE001 — the flags alone fail too (or need the file's values): not the file's doing
            raise exc from None
        raise InstacliError(f"{config}: {exc}") from None
