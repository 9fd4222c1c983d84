"""What ``compare`` will run: the user's ``--set`` overrides, one :class:`Plan` per (model, seed),
each plan's settings checked before anything trains, and what to do with a run folder that exists."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from instacli import registry
from instacli.errors import InstacliError
from instacli.results import COMPARE_INFO, RunIdentity
from instacli.run_folder import RunFolder, folder_name, read_json
from instacli.settings import TrainSettings, apply_recipe, check_components, option_value

#: The encoders compared when none are named.
DEFAULT_ENCODERS = ("vit-scratch", "hf-vit", "inception-v3", "efficientnet-lite0")
DEFAULT_REGRESSORS = ("conv1d",)

#: Per-encoder settings (``TrainSettings`` fields, or encoder options for any other key) that keep a
#: CPU budget fair and feasible; ``--set ENCODER.KEY=VALUE`` wins over them, they win over the
#: comparison-wide budget only where they name the same key (none of them does).
#:
#: * ``vit-scratch`` and ``hf-vit`` (a small ViT, 64 px, from scratch) train end to end: they are
#:   the from-scratch designs being compared, and they are cheap enough on a CPU.
#: * ``efficientnet-lite0`` and ``inception-v3`` are ImageNet-pretrained: on a CPU budget the fair
#:   use is a linear probe, the frozen encoder embedding each photo once and only the heads
#:   training. Fine-tuning Inception-v3 at 299 px would spend the whole budget in one or two epochs.
#:   Inception's weights come from torchvision's download (or its cache); offline without them the
#:   combination fails with the plugin's explanation — use ``--set inception-v3.pretrained=PATH``,
#:   or ``--set inception-v3.pretrained=none --set inception-v3.freeze_encoder=false`` to train it
#:   from scratch (slowly).
ENCODER_DEFAULTS: dict[str, dict[str, Any]] = {
    "vit-scratch": {},
    "hf-vit": {},
    "efficientnet-lite0": {},  # its registry recipe: frozen, linear probe, semantic prior
    "inception-v3": {"pretrained": "imagenet", "freeze_encoder": True},
}

#: The original design (``vit-scratch --preset seed-512``: 137M parameters at 512 px) trained
#: through our pipeline with a small budget, to show how it fails. ``--set seed-512.KEY=VALUE``
#: changes it. Its epochs are capped here, and a first epoch that overruns the time budget is
#: stopped (see :data:`HARD_LIMIT_FACTOR`).
SEED_PRESET_KEY = "seed-512"
SEED_PRESET_SETTINGS: dict[str, Any] = {"encoder": "vit-scratch", "preset": "seed-512", "epochs": 2, "batch_size": 32}

#: Settings that the comparison itself decides for every run; ``--set`` cannot change them.
MANAGED = ("data", "out", "encoder", "regressor", "seed", "overwrite", "resume")
#: Settings that may differ between the first attempt and a resume without changing the result.
VOLATILE = ("out", "overwrite", "resume", "workers")


# ----------------------------------------------------------------------------------------------
# Parsing what the user typed


def parse_overrides(pairs: Iterable[str], models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["efficientnet-lite0.freeze_encoder=true"]`` → ``{"efficientnet-lite0": {"freeze_encoder": True}}``.

    ``models`` are the names ``--set`` may address (the encoders compared, and ``seed-512``). A key
    that is a ``TrainSettings`` field sets it; any other key is an encoder option, checked against
    the encoder's options when the encoder is known. ``encoder_options.K`` / ``regressor_options.K``
    set an option explicitly.
    """
    out: dict[str, dict[str, Any]] = {}
    fields = TrainSettings.model_fields
    for pair in pairs:
        target, sep, value = pair.partition("=")
        target = target.strip()
        # the longest compared name the target starts with: a timm tag has dots of its own (timm:convnext_tiny.fb_in22k.lr)
        model = max((name for name in models if target.startswith(f"{name}.")), key=len, default=None)
        if model is None:
            read, dot, key = target.rpartition(".")
            if not sep or not dot or not read or not key:
                raise InstacliError(f"--set {pair!r}: expected ENCODER.KEY=VALUE, e.g. --set efficientnet-lite0.freeze_encoder=true")
            read = read.removesuffix(".encoder_options").removesuffix(".regressor_options")  # the name, with a timm tag's dots
            raise InstacliError(f"--set {pair!r}: '{read}' is not compared here; it must be one of {', '.join(models)}")
        group, _, key = target.removeprefix(f"{model}.").rpartition(".")  # vit-scratch.encoder_options.width → a nested option
        if not sep or not key:
            raise InstacliError(f"--set {pair!r}: expected ENCODER.KEY=VALUE, e.g. --set efficientnet-lite0.freeze_encoder=true")
        if group not in ("", "encoder_options", "regressor_options"):
            raise InstacliError(f"--set {pair!r}: expected ENCODER.KEY=VALUE or ENCODER.encoder_options.KEY=VALUE")
        if group:
            out.setdefault(model, {}).setdefault(group, {})[key.replace("-", "_")] = option_value(value)
            continue
        key = key.replace("-", "_")
        if key in MANAGED:
            raise InstacliError(f"--set {pair!r}: '{key}' is decided by compare for every run and cannot be set per encoder")
        if key in fields:
            out.setdefault(model, {})[key] = option_value(value)
            continue
        encoder = SEED_PRESET_SETTINGS["encoder"] if model == SEED_PRESET_KEY else model
        if registry.encoders.knows(encoder):
            known = registry.encoders.get(encoder).options()
            if key not in known:
                raise InstacliError(
                    f"--set {pair!r}: '{key}' is neither a training setting nor an option of encoder '{encoder}' "
                    f"(its options: {', '.join(known) or 'none'})"
                )
        out.setdefault(model, {}).setdefault("encoder_options", {})[key] = option_value(value)
    return out


# ----------------------------------------------------------------------------------------------
# What to train


@dataclass
class Plan(RunIdentity):
    """One run of the comparison: a (model, seed) pair and the settings it trains with."""

    settings: dict[str, Any] = field(default_factory=dict)  # TrainSettings kwargs besides data/out
    path: Path | None = None  # set for external runs


def _merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win; ``encoder_options``/``regressor_options`` are merged key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in ("encoder_options", "regressor_options"):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def seed_values(seeds: int) -> list[int]:
    """The seeds of ``--seeds K``: 1, 2, …, K (the folder suffix ``seed<k>`` is the seed itself)."""
    if seeds < 1:
        raise InstacliError(f"--seeds {seeds}: need at least one seed")
    return list(range(1, seeds + 1))


def plan_runs(
    encoders: Sequence[str],
    regressors: Sequence[str],
    seeds: Sequence[int],
    budget: dict[str, Any],
    base: dict[str, Any] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    include_seed_preset: bool = False,
) -> list[Plan]:
    """Every (encoder, regressor, seed), then the seed preset; settings = base < budget < defaults < --set."""
    base, overrides = base or {}, overrides or {}
    plans = []
    for encoder in encoders:
        for regressor in regressors:
            settings = _merge(base, budget, ENCODER_DEFAULTS.get(encoder, {}), overrides.get(encoder, {}))
            group = f"{encoder}__{regressor}"
            label = f"{encoder} + {regressor}"
            plans += [Plan(f"{folder_name(group)}__seed{s}", group, label, "model", encoder, regressor, s, settings) for s in seeds]
    if include_seed_preset:
        regressor = DEFAULT_REGRESSORS[0]
        settings = _merge(base, budget, SEED_PRESET_SETTINGS, overrides.get(SEED_PRESET_KEY, {}))
        settings.pop("encoder")
        if "encoder_options" in base:  # test-sized options of the base must not shrink the original design
            settings["encoder_options"] = overrides.get(SEED_PRESET_KEY, {}).get("encoder_options", {})
        encoder = SEED_PRESET_SETTINGS["encoder"]
        group = f"{encoder}-{SEED_PRESET_KEY}__{regressor}"
        label = f"{encoder} --preset {SEED_PRESET_KEY} + {regressor} (original design)"
        # one seed only: it is a demonstration of a failure, not a contender worth K runs
        plans.append(Plan(f"{group}__seed{seeds[0]}", group, label, "seed-preset", encoder, regressor, seeds[0], settings))
    return plans


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in settings.items() if k not in VOLATILE}
    if out.get("data") is not None:
        out["data"] = str(Path(out["data"]).resolve())
    return out


def settings_difference(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``key: saved → wanted`` for every setting that differs (paths compared resolved)."""
    a, b = _comparable(saved), _comparable(wanted)
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def external_plan(path: Path) -> Plan:
    """A run trained elsewhere (``--run``), evaluated beside the comparison's own."""
    folder = RunFolder(path)
    config, settings = folder.config() or {}, folder.settings() or {}
    encoder, regressor = config.get("encoder", "?"), config.get("regressor", "?")
    return Plan(path.name, f"external:{path.resolve()}", f"{encoder} + {regressor} ({path.name})", "external",
                encoder, regressor, settings.get("seed"), settings, path=path)


def check_plans(plans: Sequence[Plan], data: Path, runs_dir: Path, overwrite: bool) -> dict[str, dict[str, Any]]:
    """Every plan's settings as train will record them, checked (values, names, options, and an
    existing run folder trained otherwise) before anything trains; by plan name."""
    wanted: dict[str, dict[str, Any]] = {}
    for plan in plans:
        if plan.kind == "external":
            continue
        try:
            settings = TrainSettings(data=data, encoder=plan.encoder, regressor=plan.regressor, seed=plan.seed, **plan.settings)
        except ValidationError as exc:  # a bad --set value: fail the whole command early
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InstacliError(f"settings of {plan.label}: {where}: {first['msg']}; fix the --set value") from None
        check_components(settings)
        wanted[plan.name] = apply_recipe(settings).model_dump(mode="json")  # as train records them
        folder = RunFolder(runs_dir / plan.name)
        if folder.state() in ("finished", "resumable") and not overwrite:
            diff = settings_difference(folder.settings() or {}, wanted[plan.name])
            if diff:
                raise InstacliError(
                    f"{folder.path} was trained with other settings ({'; '.join(diff[:3])}); pass --overwrite to retrain it, "
                    "or choose another --out"
                )
    return wanted


def stopped_before(folder: RunFolder, wanted: dict[str, Any] | None) -> dict[str, Any] | None:
    """The recorded outcome of a run stopped as too slow with these same settings, if any."""
    info = read_json(folder / COMPARE_INFO) or {}
    saved = folder.settings()
    if not info.get("stopped") or saved is None or wanted is None or settings_difference(saved, wanted):
        return None
    return info["stopped"]


#: The actions that train.
TRAINING = ("train", "retrain", "resume")


def decide(plan: Plan, folder: RunFolder, wanted: dict[str, Any] | None, overwrite: bool) -> tuple[str, dict[str, Any] | None]:
    """(action, recorded stopped outcome): evaluate an external run; reuse a finished run (or a
    too-slow outcome) with the same settings; resume a checkpoint; retrain anything else."""
    state = folder.state()
    if plan.kind == "external":
        return ("evaluate" if state == "finished" else "skip"), None
    differs = bool(wanted is not None and settings_difference(folder.settings() or {}, wanted))
    if state == "finished" and not (overwrite and differs):
        return "reuse", None
    if state == "resumable" and not (overwrite and differs):
        return "resume", None
    if state == "partial":
        stopped = stopped_before(folder, wanted)
        if stopped:
            return "reuse", stopped
    return ("retrain" if state != "absent" else "train"), None
