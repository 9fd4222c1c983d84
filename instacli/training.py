"""Training through ``accelerate``: the same code on a CPU, one GPU or many processes.

Flow: load the splits → fit the scaler on train → build the model from the registry → decode every
image once (the cache) → train with AdamW, warm-up + cosine, early stopping on validation loss →
keep the best weights in the run folder. Metrics are gathered across processes and only the main
process writes files.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from pydantic import Field, NonNegativeFloat, NonNegativeInt, TypeAdapter, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file
from accelerate.utils import set_seed
from typing_extensions import TypedDict  # pydantic validates typing's TypedDict from Python 3.12 only

from instacli import registry
from instacli.augment import Augmentation, eval_view
from instacli.calibration import calibrate
from instacli.distill import distill_loss, pick_views
from instacli.embedding_cache import embeddings_path, load_embeddings, save_embeddings
from instacli.errors import InstacliError, exception_line, invalid_file
from instacli.io import atomic_file, check_writable_target, output_lock, write_json
from instacli.launch import launched_on_cpu, precision_autocast, process_state
from instacli.encoders import ImageEncoder, Preprocess
from instacli.progress import Reporter
from instacli.model import ModelConfig, MultiTaskModel, build_model, save_model
from instacli.run_folder import CONFIG, CURVES, EPOCH_METRICS, SETTINGS, WEIGHTS
from instacli.settings import TrainSettings, apply_recipe, check_components, encoder_options

if TYPE_CHECKING:  # the splits module brings in `datasets` (≈ 100 MB): predict imports this module without it
    from instacli.splits import SplitArrays

LIKES_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "huber": F.smooth_l1_loss,
    "mse": F.mse_loss,
}


@dataclass
class TrainResult:
    """What a run did; ``seconds`` is its wall time (reading, decoding, embedding and fitting included),
    ``images_per_second`` the training throughput of its epochs."""

    run: Path
    best_epoch: int
    epochs_run: int
    best: dict[str, Any]
    seconds: float
    images_per_second: float
    optimizer_steps: int = 0


def resolve_mixed_precision(choice: str, encoder: str | None = None) -> str:
    """``auto`` → bf16 where the hardware runs it fast (CUDA with bf16, or a CPU with AVX512-BF16/AMX), else no.

    On a CPU, an encoder whose recipe says ``cpu_bf16: False`` stays in fp32: oneDNN's bf16
    depthwise convolutions are far slower than fp32 ones (EfficientNet-Lite0 on the 2-core AMX
    machine, torch 2.14: 0.9 vs 12.6 images/s per thread), while matrix products gain ~5×.
    """
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if encoder is not None and not registry.encoders.get(encoder).recipe.get("cpu_bf16", True):
        return "no"
    cpu = torch.cpu
    fast_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if fast_bf16 else "no"


def stale_epochs(bad_epochs: int, improved: bool, epoch: int, epochs: int) -> int:
    """Epochs without improvement that count toward ``--patience``: none before the second half.

    Near its peak learning rate the validation loss jumps from epoch to epoch, so an early lucky
    epoch can stay the best for a while: vit-scratch on posts-dev (seed 7) had its best loss at
    epoch 6 of 30 and was stopped at 16, keeping epoch 6's weights (90.2 %, likes 1.10 × the
    oracle). Counting from the middle of the schedule, where the cosine has halved the rate, lets
    the decay do its work; the best epoch is still chosen over the whole run.
    """
    return 0 if improved else bad_epochs + (epoch > epochs // 2)


def multitask_loss(
    logits: torch.Tensor | None,
    likes: torch.Tensor | None,
    labels: torch.Tensor,
    targets: torch.Tensor,
    settings: TrainSettings,
    soft_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy on labelled rows (against ``soft_labels`` for a mixup/cutmix batch, smoothed
    already) + ``likes_weight`` × likes loss on rows with likes; (total, ce, reg)."""
    zero = labels.new_zeros((), dtype=torch.float32)
    ce = reg = zero
    if logits is not None and soft_labels is not None:
        ce = F.cross_entropy(logits.float(), soft_labels.float())
    elif logits is not None and (labels >= 0).any():
        keep = labels >= 0
        ce = F.cross_entropy(logits[keep].float(), labels[keep], label_smoothing=settings.label_smoothing)
    if likes is not None and (~torch.isnan(targets)).any():
        keep = ~torch.isnan(targets)
        reg = LIKES_LOSSES[settings.likes_loss](likes[keep].float(), targets[keep])
    return ce + settings.likes_weight * reg, ce, reg


def _param_groups(model: MultiTaskModel, settings: TrainSettings) -> list[dict[str, Any]]:
    """AdamW groups: encoder vs heads (own learning rates), no weight decay on biases, norms and embeddings."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_encoder = name.startswith("encoder.")
        decay = param.ndim > 1 and "pos_embed" not in name and "cls_token" not in name
        groups.setdefault((is_encoder, decay), []).append(param)
    encoder_lr = settings.encoder_lr if settings.encoder_lr is not None else settings.lr
    return [
        {"params": params, "lr": encoder_lr if is_encoder else settings.lr, "weight_decay": settings.weight_decay if decay else 0.0}
        for (is_encoder, decay), params in groups.items()
    ]


def _warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _model_config(settings: TrainSettings, split: SplitArrays, text: tuple[str, dict] | None) -> ModelConfig:
    return ModelConfig(
        encoder=settings.encoder,
        encoder_options=encoder_options(settings),
        regressor=settings.regressor,
        regressor_options=dict(settings.regressor_options),
        class_names=split.class_names,
        scaler=split.scaler.to_dict(),
        task=split.task,
        text_encoder=text[0] if text else None,
        text_options=text[1] if text else {},
        text_dim=split.text.shape[1],
        text_to_classifier=settings.text_to_classifier,
        class_to_regressor=split.task == "both",
        semantic_prior=settings.semantic_prior,
        probe_head=bool(settings.freeze_encoder or settings.probe_first) and split.task != "likes" and not settings.text_to_classifier,
    )


@torch.inference_mode()
def embed_images(
    encoder: ImageEncoder, images: torch.Tensor, device: torch.device, precision: str, batch_size: int = 128,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Embeddings of cached uint8 images (eval view), in ``precision`` (accelerate's ``no``/``bf16``/``fp16``):
    the inputs of heads trained on a frozen encoder, and a distillation teacher's targets."""
    encoder = encoder.eval()  # batch norm must use its stored statistics
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        with precision_autocast(device, precision):
            out.append(encoder(eval_view(batch, encoder.preprocess)).float().cpu())
        if on_batch:
            on_batch(len(batch))
    return torch.cat(out)


def cached_embeddings(
    split: SplitArrays, encoder: ImageEncoder, options: dict[str, Any], precision: str, settings: TrainSettings,
    accelerator: Accelerator, reporter: Reporter, who: str,
) -> torch.Tensor:
    """``encoder``'s embeddings of every photo of ``split``: from the embedding cache when an earlier
    run computed them (then the photos are not even decoded), else decoded, embedded and cached."""
    def embed() -> torch.Tensor:
        pixels = decoded_images(split, encoder.preprocess.resize_size, settings, reporter)
        with reporter.stage(f"embedding {len(split)} {split.name} images ({who})", len(split)) as advance:
            return embed_images(encoder.to(accelerator.device), pixels, accelerator.device, precision, on_batch=advance)

    return _cached(embeddings_path(split.cache_key, encoder, options, precision), len(split), embed, accelerator)


def _cached(path: Path | None, rows: int, compute: Callable[[], torch.Tensor], accelerator: Accelerator) -> torch.Tensor:
    """The ``(rows, D)`` tensor cached at ``path`` (:mod:`instacli.embedding_cache`), else ``compute()``'s,
    cached by the main process (``path`` None: the split has no fingerprint to key a cache on)."""
    cached = load_embeddings(path, rows) if path is not None else None
    if cached is not None:
        return cached
    tensor = compute()
    if path is not None and accelerator.is_main_process:
        save_embeddings(path, tensor)
    return tensor


def decoded_images(split: SplitArrays, size: int, settings: TrainSettings, reporter: Reporter) -> torch.Tensor:
    with reporter.stage(f"decoding {len(split)} {split.name} images", len(split)) as advance:
        return split.images(size, settings.workers, advance)


def split_inputs(
    split: SplitArrays, net: MultiTaskModel, config: ModelConfig, settings: TrainSettings, accelerator: Accelerator, reporter: Reporter
) -> torch.Tensor:
    """What the loaders of ``split`` feed: its decoded images, or with a frozen encoder their (cached) embeddings."""
    if not settings.freeze_encoder:
        return decoded_images(split, net.encoder.preprocess.resize_size, settings, reporter)
    return cached_embeddings(
        split, net.encoder, config.encoder_options, accelerator.mixed_precision, settings, accelerator, reporter, f"{config.encoder}, frozen"
    )


def teacher_targets(
    split: SplitArrays, student: Preprocess, settings: TrainSettings, accelerator: Accelerator, reporter: Reporter
) -> tuple[torch.Tensor, torch.Tensor]:
    """``--distill-from``'s teacher on crops of the training photos (:mod:`instacli.distill`): the crop
    boxes ``(N, VIEWS, 2, 3)`` and its probabilities ``(N, VIEWS, C)``, cached like embeddings."""
    from instacli.distill import VIEWS, head_digest, teacher_model, view_boxes, view_probabilities
    from instacli.probe import fit_category_probe

    teacher, config, needs_head = teacher_model(str(settings.distill_from), split.class_names, split.scaler.to_dict())
    device = accelerator.device
    precision = resolve_mixed_precision("auto", config.encoder) if device.type == "cpu" else accelerator.mixed_precision
    if needs_head:
        embeddings = cached_embeddings(split, teacher.encoder, config.encoder_options, precision, settings, accelerator, reporter, f"teacher {config.encoder}")
        fit_category_probe(teacher, embeddings, split.labels)
    boxes = view_boxes(len(split), student, settings.seed)
    key = {**config.encoder_options, "views": VIEWS, "seed": settings.seed, "student": student.to_dict(), "temperature": config.temperature,
           "head": head_digest(teacher)}

    def ask() -> torch.Tensor:
        images = decoded_images(split, teacher.encoder.preprocess.resize_size, settings, reporter)
        with reporter.stage(f"teacher {config.encoder} labels {VIEWS} crops of {len(split)} {split.name} images", len(split)) as advance:
            answers = view_probabilities(teacher.to(device), config.temperature, images, boxes, device, precision, on_batch=advance)
        return answers.reshape(len(split), -1)  # the cache holds (rows, D) tensors

    probabilities = _cached(embeddings_path(split.cache_key, teacher.encoder, key, precision), len(split), ask, accelerator)
    return boxes, probabilities.view(len(split), VIEWS, -1)


def training_augmentation(settings: TrainSettings, config: ModelConfig, model: MultiTaskModel, accelerator: Accelerator) -> Augmentation:
    """The training view of the settings (:class:`instacli.augment.Augmentation`), checked against what it can apply to."""
    extras = {"auto_augment": settings.auto_augment != "none", "random_erasing": settings.random_erasing > 0,
              "mixup": settings.mixup > 0, "cutmix": settings.cutmix > 0, "hue": settings.hue > 0, "grayscale": settings.grayscale > 0}
    given = [f"--{name.replace('_', '-')}" for name, on in extras.items() if on]
    if given and settings.freeze_encoder:
        raise InstacliError(f"{', '.join(given)}: a frozen encoder embeds each photo once, unaugmented; add --no-freeze-encoder or drop the flag")
    blends = extras["mixup"] or extras["cutmix"]
    if blends and config.task != "category":
        raise InstacliError("--mixup/--cutmix blend two photos, and a blend has no likes count; train with --task category or drop the flag")
    if blends and settings.distill_from is not None:
        raise InstacliError("--mixup/--cutmix blend photos the --distill-from teacher has not seen; use one or the other")
    return Augmentation.create(
        model.encoder.preprocess, settings.auto_augment, settings.random_erasing, settings.mixup, settings.cutmix,
        len(config.class_names), settings.label_smoothing, accelerator.device, settings.hue, settings.grayscale,
    )


def _loader(
    arrays: SplitArrays, inputs: torch.Tensor, batch_size: int, shuffle: bool, seed: int,
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.utils.data.DataLoader:
    """Batches of (inputs, features, targets, labels, text), and the teacher's crop boxes and answers when distilling."""
    columns = (inputs, arrays.features, arrays.targets, arrays.labels, arrays.text) + (teacher or ())
    dataset = torch.utils.data.TensorDataset(*columns)
    generator = torch.Generator().manual_seed(seed)
    global_batch = batch_size * process_state().num_processes  # N processes must drop (or keep) what one process would
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle and len(dataset) >= 4 * global_batch, generator=generator
    )


@torch.inference_mode()
def run_inference(
    model: MultiTaskModel, loader: torch.utils.data.DataLoader, accelerator: Accelerator, frozen: bool
) -> dict[str, np.ndarray]:
    """Logits and standardized likes for every row of ``loader``, gathered from all processes."""
    model.eval()
    net = accelerator.unwrap_model(model)
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "likes": [], "labels": [], "targets": []}
    for inputs, features, targets, labels, text, *_ in loader:
        with accelerator.autocast():
            pixels = inputs if frozen else eval_view(inputs, net.encoder.preprocess)
            logits, likes = model(pixels, features, text, embedded=frozen)
        logits = logits.float() if logits is not None else torch.zeros(len(labels), 0, device=labels.device)
        likes = likes.float() if likes is not None else torch.full_like(targets, float("nan"))
        gathered = accelerator.gather_for_metrics((logits, likes, labels, targets))
        for key, value in zip(parts, gathered):
            parts[key].append(value.cpu())
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def validation_metrics(out: dict[str, np.ndarray], settings: TrainSettings) -> dict[str, float]:
    """Validation loss (same definition as training), accuracy and log-likes MAE."""
    logits = torch.from_numpy(out["logits"]) if out["logits"].shape[1] else None
    likes = torch.from_numpy(out["likes"]) if not np.isnan(out["likes"]).all() else None
    labels, targets = torch.from_numpy(out["labels"]), torch.from_numpy(out["targets"])
    total, ce, reg = multitask_loss(logits, likes, labels, targets, settings)
    metrics = {"val_loss": float(total), "val_ce": float(ce), "val_likes_loss": float(reg)}
    labelled = out["labels"] >= 0
    if logits is not None and labelled.any():
        metrics["val_accuracy"] = float((out["logits"][labelled].argmax(1) == out["labels"][labelled]).mean())
    return metrics


@torch.inference_mode()
def fit_regressor(net: MultiTaskModel, split: SplitArrays, embeddings: torch.Tensor, accelerator: Accelerator) -> None:
    """Fit a scikit-learn regressor (``ridge``, ``gbrt``) on the training split's image embeddings."""
    net.eval()
    device = accelerator.device
    with accelerator.autocast():
        fused, numbers = net.likes_inputs(embeddings.float().to(device), split.features.to(device), split.text.to(device))
    net.regressor.fit(fused.float(), numbers.float(), split.targets.to(device))


def fit_classical_regressor(
    run: Path, net: MultiTaskModel, config: ModelConfig, split: SplitArrays, inputs: torch.Tensor, frozen: bool, accelerator: Accelerator
) -> None:
    """Fit the scikit-learn regressor on the best epoch's network (embedding the images unless frozen), then save."""
    net.load_state_dict(load_file(str(run / WEIGHTS)))
    embeddings = inputs if frozen else embed_images(net.encoder, inputs, accelerator.device, accelerator.mixed_precision)
    fit_regressor(net, split, embeddings, accelerator)
    save_model(run, net, config)


@torch.inference_mode()
def heads_outputs(net: MultiTaskModel, split: SplitArrays, embeddings: torch.Tensor, device: torch.device) -> dict[str, np.ndarray]:
    """What :func:`run_inference` returns, from the heads on a split's precomputed embeddings, all rows at once."""
    logits, likes = net.eval().heads(embeddings.to(device), split.features.to(device), split.text.to(device))
    n = len(split)
    return {
        "logits": logits.float().cpu().numpy() if logits is not None else np.zeros((n, 0), np.float32),
        "likes": likes.float().cpu().numpy() if likes is not None else np.full(n, np.nan, np.float32),
        "labels": split.labels.numpy(), "targets": split.targets.numpy(),
    }


def fit_directly(
    run: Path, net: MultiTaskModel, config: ModelConfig, settings: TrainSettings, splits: tuple[SplitArrays, SplitArrays],
    inputs: tuple[torch.Tensor, torch.Tensor], accelerator: Accelerator, reporter: Reporter, wall_started: float,
) -> TrainResult:
    """Frozen encoder with nothing left for gradients (the category probe already fitted, the likes
    regressor ``ridge``/``gbrt`` or absent): there are no epochs (an optimizer would even refuse the
    empty parameter list). Fit the regressor on the training embeddings, score both splits once, and
    write an ordinary run folder with one metrics record."""
    (train_split, val_split), (train_inputs, val_inputs) = splits, inputs
    reporter.start(0, 0, _run_info(run, accelerator))
    with reporter.stage(f"fitting {settings.regressor if net.regressor is not None else 'the category head'} on {len(train_split)} training embeddings"):
        if net.regressor is not None:
            fit_regressor(net, train_split, train_inputs, accelerator)
        trained = validation_metrics(heads_outputs(net, train_split, train_inputs, accelerator.device), settings)
    validation = heads_outputs(net, val_split, val_inputs, accelerator.device)
    if validation["logits"].shape[1]:
        config.temperature, config.unfamiliar_threshold = calibrate(validation["logits"], validation["labels"])
    seconds = time.perf_counter() - wall_started  # the one "epoch" is the whole run: reading, embedding, fitting
    record: dict[str, Any] = {
        "epoch": 0,  # no epochs: fitted directly
        **{key.replace("val_", "train_"): value for key, value in trained.items()},
        **validation_metrics(validation, settings),
        "optimizer_steps": 0, "seconds": seconds, "images_per_second": len(train_split) / seconds,
        "images_seen": len(train_split), "elapsed": seconds,
    }
    if accelerator.is_main_process:
        _start_run_folder(run, settings)
        save_model(run, net, config)
        with atomic_file(run / EPOCH_METRICS) as handle:
            handle.write(json.dumps(record) + "\n")
    accelerator.wait_for_everyone()
    reporter.epoch_end({**record, "best": True})
    result = TrainResult(run=run, best_epoch=0, epochs_run=0, best=record, seconds=seconds, images_per_second=len(train_split) / seconds)
    reporter.finish(result.__dict__)
    return result


def with_run_settings(flags: dict[str, Any]) -> dict[str, Any]:
    """For ``--resume``: the run's own ``settings.json`` supplies every flag not given again (``None``)."""
    out = flags.get("out")
    if not flags.get("resume") or out is None or not (Path(out) / SETTINGS).is_file():
        return flags
    path = Path(out) / SETTINGS
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InstacliError(f"{path}: not valid JSON ({exc}); the run folder is damaged: start the run over with --overwrite") from None
    if not isinstance(saved, dict):
        raise InstacliError(f"{path}: not a settings object; the run folder is damaged: start the run over with --overwrite")
    merged = {k: v for k, v in saved.items() if k in TrainSettings.model_fields and k not in ("resume", "overwrite")}
    merged.update({k: v for k, v in flags.items() if v is not None})
    return merged


class TrainerState(TypedDict):
    """Everything besides accelerate's state that a resumed run needs: position, early stopping,
    counters. Typed so that a damaged ``trainer_state.json`` is refused on ``--resume`` (pydantic)."""

    epoch: NonNegativeInt
    batch: NonNegativeInt
    best_val: float
    best_epoch: NonNegativeInt
    bad_epochs: NonNegativeInt
    optimizer_steps: NonNegativeInt
    images_seen: NonNegativeInt
    seconds: NonNegativeFloat
    sums: Annotated[list[float], Field(min_length=3, max_length=3)]
    steps: NonNegativeInt
    epoch_seconds: NonNegativeFloat
    history: list[dict[str, Any]]


_TRAINER_STATE = TypeAdapter(TrainerState)


def new_trainer_state() -> TrainerState:
    """The state of a run that has not trained yet."""
    return {
        "epoch": 0,  # last finished epoch
        "batch": 0,  # batches of the next epoch already trained (a mid-epoch checkpoint)
        "best_val": float("inf"), "best_epoch": 0, "bad_epochs": 0,
        "optimizer_steps": 0, "images_seen": 0, "seconds": 0.0,
        "sums": [0.0, 0.0, 0.0], "steps": 0, "epoch_seconds": 0.0,  # the unfinished epoch's running loss
        "history": [],  # one record per finished epoch, as in metrics.jsonl
    }


def _checkpoint_folders(run: Path) -> tuple[Path, Path, Path]:
    return run / "checkpoint", run / "checkpoint.tmp", run / "checkpoint.old"


def load_checkpoint(accelerator: Accelerator, run: Path) -> TrainerState:
    """Restore the newest checkpoint of ``run`` into ``accelerator``'s objects and return its trainer state.

    Any file of it that is truncated, empty, replaced (a pickle that ``weights_only`` refuses) or
    missing is a one-line error: the checkpoint cannot be trusted, the run has to start over.
    """
    found = find_checkpoint(run)
    if found is None:
        raise InstacliError(f"{run}: nothing to resume (no checkpoint/trainer_state.json); start a new run instead")
    try:
        state = _TRAINER_STATE.validate_json((found / "trainer_state.json").read_bytes())
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            accelerator.load_state(str(found))  # weights, optimizer, scheduler, RNG of every process
    except ValidationError as exc:
        raise invalid_file(found / "trainer_state.json", exc, "start the run over with --overwrite") from None
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: code execution, never for us
        raise InstacliError(f"{found}: a checkpoint file holds more than tensors (refused, not run); start the run over with --overwrite") from None
    except (SafetensorError, RuntimeError, EOFError, KeyError, OSError) as exc:  # torch's messages run to 15 lines
        raise InstacliError(f"{found}: damaged checkpoint ({exception_line(exc)}); start the run over with --overwrite") from None
    return state


def find_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint of ``run`` (``trainer_state.json`` is written last), if any."""
    final, _, old = _checkpoint_folders(run)
    return next((folder for folder in (final, old) if (folder / "trainer_state.json").is_file()), None)


def save_checkpoint(accelerator: Accelerator, run: Path, state: dict[str, Any]) -> None:
    """``accelerate.save_state`` (model, optimizer, scheduler, every process's RNG) + ``trainer_state.json``.

    Written to ``checkpoint.tmp`` and swapped in by renames, so that a kill at any moment leaves a
    complete checkpoint behind (``checkpoint`` or, during the swap, ``checkpoint.old``).
    """
    final, tmp, old = _checkpoint_folders(run)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / "trainer_state.json", state)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def check_built_dataset(data: Path) -> None:
    """Refuse a plain photo folder: it has no validation split, so accuracy, early stopping and the
    best epoch would all be measured on the training photos themselves."""
    from instacli_datasets.load import is_built_dataset

    if Path(data).is_dir() and not is_built_dataset(data):
        raise InstacliError(
            f"{data}: a plain photo folder has no validation split to train against; "
            f"build a dataset first: instacli data build {data} --out DATA, then train --data DATA"
        )


def _run_info(run: Path, accelerator: Accelerator) -> dict[str, Any]:
    return {"run": str(run), "mixed_precision": accelerator.mixed_precision, "processes": accelerator.num_processes,
            "device": str(accelerator.device)}


def _start_run_folder(run: Path, settings: TrainSettings) -> None:
    """A new (or ``--overwrite``) run: the folder, no leftover checkpoint or metrics, this run's settings."""
    run.mkdir(parents=True, exist_ok=True)
    for folder in _checkpoint_folders(run):  # --overwrite of an interrupted run
        shutil.rmtree(folder, ignore_errors=True)
    (run / EPOCH_METRICS).unlink(missing_ok=True)
    write_json(run / SETTINGS, settings.model_dump(mode="json"))


def check_run_folder(run: Path) -> None:
    """Refuse an ``--out`` that holds something other than a run (the dataset folder, a photo folder):
    training writes its files there and removes a ``metrics.jsonl`` and ``checkpoint`` folders it finds."""
    if run.exists() and not run.is_dir():
        raise InstacliError(f"--out {run}: is a file, not a run folder; choose a new folder for the run")
    if run.is_dir() and not any((run / name).exists() for name in (SETTINGS, CONFIG)) and any(
        not entry.name.startswith(".") for entry in run.iterdir()
    ):
        raise InstacliError(f"--out {run}: exists and is not an instacli run (no settings.json); choose a new folder for the run")


def train(settings: TrainSettings, reporter: Reporter | None = None) -> TrainResult:
    """Train one model as ``settings`` says and write the run folder; returns a summary.

    The main process holds the run folder's lock throughout: a second ``train --out`` to the same
    folder fails at once instead of mixing its settings and weights with this run's."""
    wall_started = time.perf_counter()  # the summary's time counts reading, decoding and embedding too
    reporter = reporter or Reporter()
    settings = apply_recipe(settings)
    check_components(settings)
    check_built_dataset(settings.data)
    run = settings.out or Path("runs") / f"{settings.encoder}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_run_folder(run)
    with output_lock(run) if process_state().is_main_process else nullcontext():
        return _train_into(run, settings, reporter, wall_started)


def _train_into(run: Path, settings: TrainSettings, reporter: Reporter, wall_started: float) -> TrainResult:
    """:func:`train` once the run folder is checked and locked."""
    accelerator = Accelerator(
        cpu=launched_on_cpu(),
        mixed_precision=resolve_mixed_precision(settings.mixed_precision, settings.encoder),
        gradient_accumulation_steps=settings.grad_accum,
        step_scheduler_with_optimizer=False,  # the schedule counts optimizer steps, stepped below on each one
        # The shuffle of epoch e depends on seed + e only, so a resumed epoch skips exactly the batches it had done.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=settings.seed),
    )
    if not settings.resume:  # every process checks, so that all of them stop with the same message
        check_writable_target(run / "checkpoint", settings.overwrite, "a run in progress (use --resume)")
        check_writable_target(run / WEIGHTS, settings.overwrite, "a trained run")
    set_seed(settings.seed)

    text = (settings.text_encoder, dict(settings.text_options)) if settings.text else None
    from instacli.splits import load_split_arrays

    with reporter.stage(f"reading {settings.data}"):
        train_split = load_split_arrays(settings.data, "train", settings, text=text)
        val_split = load_split_arrays(settings.data, "validation", settings, scaler=train_split.scaler, task=train_split.task, text=text)
    config = _model_config(settings, train_split, text)
    model = build_model(config)
    if getattr(model.regressor, "fits_after_training", False) and config.task == "likes" and not settings.freeze_encoder:
        raise InstacliError(
            f"regressor '{settings.regressor}' is fitted after training and gives the encoder no gradient; "
            "with --task likes add --freeze-encoder or pick a neural regressor (conv1d, mlp, linear)"
        )
    if settings.freeze_encoder:  # embeddings never change: compute them once, train the heads only
        model.encoder.requires_grad_(False)
        model.to(accelerator.device)
    with accelerator.main_process_first():  # the main process decodes (and embeds); the others read its caches
        train_inputs = split_inputs(train_split, model, config, settings, accelerator, reporter)
        val_inputs = split_inputs(val_split, model, config, settings, accelerator, reporter)
    augmentation = training_augmentation(settings, config, model, accelerator)
    teacher = None
    if settings.distill_from is not None:
        if settings.freeze_encoder:
            raise InstacliError("--distill-from teaches the encoder; it cannot be frozen (drop --freeze-encoder)")
        if config.task == "likes":
            raise InstacliError("--distill-from teaches the category head; this data has no categories (drop --distill-from)")
        with accelerator.main_process_first():
            teacher = teacher_targets(train_split, model.encoder.preprocess, settings, accelerator, reporter)
    if settings.probe_first and not config.probe_head:
        raise InstacliError("--probe-first fits the category head from the image alone; it needs categories and no --text-to-classifier")
    if config.probe_head:
        from instacli.probe import fit_category_probe

        embeddings = train_inputs if settings.freeze_encoder else cached_embeddings(
            train_split, model.encoder, config.encoder_options, accelerator.mixed_precision, settings, accelerator, reporter,
            f"{config.encoder}, before fine-tuning",
        )
        fit_category_probe(model, embeddings, train_split.labels)
        if not settings.freeze_encoder:  # LP-FT: the probe is where fine-tuning starts
            for module in (model.classifier, model.prior_classifier):
                if module is not None:
                    module.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):  # frozen: probe fitted, regressor absent or fitted below
        return fit_directly(run, model, config, settings, (train_split, val_split), (train_inputs, val_inputs), accelerator, reporter, wall_started)
    train_loader = _loader(train_split, train_inputs, settings.batch_size, shuffle=True, seed=settings.seed, teacher=teacher)
    val_loader = _loader(val_split, val_inputs, settings.batch_size * 2, shuffle=False, seed=settings.seed)

    optimizer = torch.optim.AdamW(_param_groups(model, settings), betas=(0.9, 0.999))
    # optimizer steps per epoch and process: accelerate gives each process ceil(batches / processes) batches
    steps_per_epoch = math.ceil(math.ceil(len(train_loader) / accelerator.num_processes) / settings.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(int(settings.warmup_epochs * steps_per_epoch), settings.epochs * steps_per_epoch)
    )
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, val_loader, scheduler)
    if settings.compile:
        model = torch.compile(model)

    set_seed(settings.seed, device_specific=True)  # augmentation and dropout differ between processes
    state = new_trainer_state()
    if settings.resume:
        state = load_checkpoint(accelerator, run)
        if accelerator.is_main_process:  # forget records of an epoch that ran past the checkpoint
            with atomic_file(run / EPOCH_METRICS) as handle:
                handle.writelines(json.dumps(r) + "\n" for r in state["history"])
    elif accelerator.is_main_process:
        _start_run_folder(run, settings)

    reporter.start(settings.epochs, len(train_loader), _run_info(run, accelerator))
    resumed_seconds = state["seconds"]
    started = time.perf_counter() - resumed_seconds  # the time budget counts the time before an interruption
    net = accelerator.unwrap_model(model)
    accum, n_batches = settings.grad_accum, len(train_loader)
    for epoch in range(state["epoch"] + 1, settings.epochs + 1):
        model.train()
        if settings.freeze_encoder:
            net.encoder.eval()
        train_loader.set_epoch(epoch)
        done = state["batch"]
        loader = accelerator.skip_first_batches(train_loader, done) if done else train_loader
        accelerator.step = done  # accumulation groups start with the epoch (accelerate resets at its end)
        epoch_start = time.perf_counter() - state["epoch_seconds"]
        sums, steps = np.array(state["sums"], dtype=np.float64), state["steps"]
        for index, (inputs, features, targets, labels, text, *distill) in enumerate(loader, start=done):
            with accelerator.accumulate(model):
                boxes, teacher_probabilities = pick_views(*distill) if distill else (None, None)
                pixels, soft_labels = (inputs, None) if settings.freeze_encoder else augmentation.mix(augmentation.view(inputs, boxes), labels)
                with accelerator.autocast():
                    logits, likes = model(pixels, features, text, embedded=settings.freeze_encoder)
                    aux = None if settings.freeze_encoder else net.encoder.auxiliary_loss()
                total, ce, reg = multitask_loss(logits, likes, labels, targets, settings, soft_labels)
                if aux is not None:
                    total = total + aux
                if teacher_probabilities is not None:
                    total = total + settings.distill_weight * distill_loss(logits, teacher_probabilities)
                # accelerate divides every loss by grad_accum; the epoch's last group may be shorter
                group = min(accum, n_batches - index // accum * accum)
                accelerator.backward(total if group == accum else total * (accum / group))
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            sums += [total.item(), ce.item(), reg.item()]
            steps += 1
            state["images_seen"] += len(labels) * accelerator.num_processes
            reporter.step(epoch, sums[0] / steps)
            if accelerator.sync_gradients:
                state["optimizer_steps"] += 1
                every = settings.checkpoint_every
                if every and state["optimizer_steps"] % every == 0 and index + 1 < n_batches:
                    now = time.perf_counter()
                    state.update(batch=index + 1, steps=steps, epoch_seconds=now - epoch_start, seconds=now - started,
                                 sums=accelerator.reduce(torch.from_numpy(sums), "mean").tolist())
                    save_checkpoint(accelerator, run, state)
        epoch_seconds = time.perf_counter() - epoch_start
        sums = accelerator.reduce(torch.from_numpy(sums), "mean").numpy()  # every process's mean loss
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": sums[0] / max(steps, 1),
            "train_ce": sums[1] / max(steps, 1),
            "train_likes_loss": sums[2] / max(steps, 1),
            **validation_metrics(run_inference(model, val_loader, accelerator, settings.freeze_encoder), settings),
            "lr": scheduler.get_last_lr()[0],
            "optimizer_steps": state["optimizer_steps"],
            "seconds": epoch_seconds,
            "images_per_second": steps * settings.batch_size * accelerator.num_processes / max(epoch_seconds, 1e-9),
            "images_seen": state["images_seen"],  # since the start, every process
            "elapsed": time.perf_counter() - started,  # training so far, validation and checkpoints included
        }
        improved = record["val_loss"] < state["best_val"] - 1e-4
        state.update(epoch=epoch, batch=0, sums=[0.0, 0.0, 0.0], steps=0, epoch_seconds=0.0,
                     bad_epochs=stale_epochs(state["bad_epochs"], improved, epoch, settings.epochs))
        if improved:
            state.update(best_val=record["val_loss"], best_epoch=epoch)
        state["history"].append(record)
        if accelerator.is_main_process:
            if improved:
                save_model(run, net, config)
            with open(run / EPOCH_METRICS, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        state["seconds"] = time.perf_counter() - started
        save_checkpoint(accelerator, run, state)
        reporter.epoch_end({**record, "best": improved})
        if settings.time_budget is not None and state["seconds"] > settings.time_budget:
            accelerator.set_trigger()  # each process reads its own clock: one out of time stops them all, together
        if state["bad_epochs"] >= settings.patience or accelerator.check_trigger():  # bad_epochs: from gathered metrics, alike everywhere
            break

    train_seconds = time.perf_counter() - started
    if getattr(net.regressor, "fits_after_training", False) and accelerator.is_main_process:
        with reporter.stage(f"fitting {settings.regressor} on {len(train_split)} training embeddings"):
            fit_classical_regressor(run, net, config, train_split, train_inputs, settings.freeze_encoder, accelerator)
    if net.classifier is not None:  # temperature and unfamiliarity threshold of the best epoch's weights
        with reporter.stage(f"calibrating on {len(val_split)} validation images", len(val_split)) as advance:
            accelerator.wait_for_everyone()
            net.load_state_dict(load_file(str(run / WEIGHTS)))
            out = run_inference(model, val_loader, accelerator, settings.freeze_encoder)
            advance(len(val_split))
            if accelerator.is_main_process:
                config.temperature, config.unfamiliar_threshold = calibrate(out["logits"], out["labels"])
                save_model(run, net, config)
    history = state["history"]
    best = next(r for r in history if r["epoch"] == state["best_epoch"])
    if accelerator.is_main_process:
        from instacli.plots import plot_curves

        plot_curves(history, run / CURVES)
        # The resume checkpoint is accelerate's format (it pickles RNG and optimizer state); a finished
        # run keeps only safetensors and JSON.
        for folder in _checkpoint_folders(run):
            shutil.rmtree(folder, ignore_errors=True)
    result = TrainResult(
        run=run, best_epoch=state["best_epoch"], epochs_run=state["epoch"], best=best,
        seconds=resumed_seconds + time.perf_counter() - wall_started,  # wall time, before an interruption too
        images_per_second=state["images_seen"] / max(train_seconds, 1e-9), optimizer_steps=state["optimizer_steps"],
    )
    reporter.finish(result.__dict__)
    return result
