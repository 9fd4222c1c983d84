"""Training through ``accelerate``: the same code on a CPU, one GPU or many processes.

Flow: load the splits → fit the scaler on train → build the model from the registry → decode every
image once (the cache) → train with AdamW, warm-up + cosine, early stopping on validation loss →
keep the best weights in the run folder. Metrics are gathered across processes and only the main
process writes files.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed

from instacli import registry
from instacli.augment import eval_view, train_view
from instacli.errors import InstacliError
from instacli.io import check_writable_target, write_json
from instacli.model import ModelConfig, MultiTaskModel, build_model, save_model
from instacli.settings import TrainSettings
from instacli.splits import SplitArrays, load_split_arrays

LIKES_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "huber": F.smooth_l1_loss,
    "mse": F.mse_loss,
}


class Reporter:
    """Hooks the CLI implements to show progress; the library itself prints nothing."""

    def start(self, epochs: int, steps_per_epoch: int, info: dict[str, Any]) -> None: ...

    def step(self, epoch: int, loss: float) -> None: ...

    def epoch_end(self, record: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    run: Path
    best_epoch: int
    epochs_run: int
    best: dict[str, Any]
    seconds: float
    images_per_second: float


def resolve_mixed_precision(choice: str) -> str:
    """``auto`` → bf16 where the hardware runs it fast (CUDA with bf16, or a CPU with AVX512-BF16/AMX), else no."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cpu = torch.cpu
    fast_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if fast_bf16 else "no"


def multitask_loss(
    logits: torch.Tensor | None,
    likes: torch.Tensor | None,
    labels: torch.Tensor,
    targets: torch.Tensor,
    settings: TrainSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy on labelled rows + ``likes_weight`` × likes loss on rows with likes; (total, ce, reg)."""
    zero = labels.new_zeros((), dtype=torch.float32)
    ce = reg = zero
    if logits is not None and (labels >= 0).any():
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
    options = dict(settings.encoder_options)
    for key in ("image_size", "pretrained"):  # first-class flags for two common encoder options
        if getattr(settings, key) is not None:
            options[key] = getattr(settings, key)
    options = registry.encoders.resolve_options(settings.encoder, settings.preset, **options)
    return ModelConfig(
        encoder=settings.encoder,
        encoder_options=options,
        regressor=settings.regressor,
        regressor_options=dict(settings.regressor_options),
        class_names=split.class_names,
        scaler=split.scaler.to_dict(),
        task=split.task,
        text_encoder=text[0] if text else None,
        text_options=text[1] if text else {},
        text_dim=split.text.shape[1],
        text_to_classifier=settings.text_to_classifier,
    )


@torch.inference_mode()
def embed_images(model: MultiTaskModel, images: torch.Tensor, accelerator: Accelerator, batch_size: int = 128) -> torch.Tensor:
    """Encoder embeddings of cached uint8 images (eval view); used to train heads on a frozen encoder."""
    encoder = accelerator.unwrap_model(model).encoder
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(accelerator.device)
        with accelerator.autocast():
            out.append(encoder(eval_view(batch, encoder.preprocess)).float().cpu())
    return torch.cat(out)


def _loader(arrays: SplitArrays, inputs: torch.Tensor, batch_size: int, shuffle: bool, seed: int) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(inputs, arrays.features, arrays.targets, arrays.labels, arrays.text)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle and len(dataset) > batch_size, generator=generator
    )


@torch.inference_mode()
def run_inference(
    model: MultiTaskModel, loader: torch.utils.data.DataLoader, accelerator: Accelerator, frozen: bool
) -> dict[str, np.ndarray]:
    """Logits and standardized likes for every row of ``loader``, gathered from all processes."""
    model.eval()
    net = accelerator.unwrap_model(model)
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "likes": [], "labels": [], "targets": []}
    for inputs, features, targets, labels, text in loader:
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


def train(settings: TrainSettings, reporter: Reporter | None = None) -> TrainResult:
    """Train one model as ``settings`` says and write the run folder; returns a summary."""
    reporter = reporter or Reporter()
    run = settings.out or Path("runs") / f"{settings.encoder}-{time.strftime('%Y%m%d-%H%M%S')}"
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(settings.mixed_precision),
        gradient_accumulation_steps=settings.grad_accum,
    )
    if accelerator.is_main_process and not settings.resume:
        check_writable_target(run / "model.safetensors", settings.overwrite, "a trained run")
        check_writable_target(run / "checkpoint", settings.overwrite, "a run in progress (use --resume)")
    set_seed(settings.seed)

    text = (settings.text_encoder, dict(settings.text_options)) if settings.text else None
    train_split = load_split_arrays(settings.data, "train", settings, text=text)
    val_split = load_split_arrays(settings.data, "validation", settings, scaler=train_split.scaler, task=train_split.task, text=text)
    config = _model_config(settings, train_split, text)
    model = build_model(config)
    preprocess = model.encoder.preprocess
    with accelerator.main_process_first():  # the main process decodes; the others read its cache
        train_images = train_split.images(preprocess.resize_size, settings.workers)
        val_images = val_split.images(preprocess.resize_size, settings.workers)

    if settings.freeze_encoder:  # embeddings never change: compute them once, train the heads only
        model.encoder.requires_grad_(False)
        model.to(accelerator.device)
        train_inputs = embed_images(model, train_images, accelerator)
        val_inputs = embed_images(model, val_images, accelerator)
    else:
        train_inputs, val_inputs = train_images, val_images
    train_loader = _loader(train_split, train_inputs, settings.batch_size, shuffle=True, seed=settings.seed)
    val_loader = _loader(val_split, val_inputs, settings.batch_size * 2, shuffle=False, seed=settings.seed)

    optimizer = torch.optim.AdamW(_param_groups(model, settings), betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(len(train_loader) / settings.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(int(settings.warmup_epochs * steps_per_epoch), settings.epochs * steps_per_epoch)
    )
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, val_loader, scheduler)
    if settings.compile:
        model = torch.compile(model)

    state = {"epoch": 0, "best_val": float("inf"), "best_epoch": 0, "bad_epochs": 0}
    checkpoint = run / "checkpoint"
    if settings.resume:
        if not (checkpoint / "trainer_state.json").is_file():
            raise InstacliError(f"{run}: nothing to resume (no checkpoint/trainer_state.json); start a new run instead")
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    elif accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.jsonl").unlink(missing_ok=True)
        write_json(run / "settings.json", settings.model_dump(mode="json"))

    reporter.start(settings.epochs, len(train_loader), {"run": str(run), "mixed_precision": accelerator.mixed_precision,
                                                        "processes": accelerator.num_processes, "device": str(accelerator.device)})
    started = time.perf_counter()
    images_seen = 0
    net = accelerator.unwrap_model(model)
    for epoch in range(state["epoch"] + 1, settings.epochs + 1):
        model.train()
        if settings.freeze_encoder:
            net.encoder.eval()
        epoch_start = time.perf_counter()
        sums = np.zeros(3)
        steps = 0
        for inputs, features, targets, labels, text in train_loader:
            with accelerator.accumulate(model):
                pixels = inputs if settings.freeze_encoder else train_view(inputs, preprocess)
                with accelerator.autocast():
                    logits, likes = model(pixels, features, text, embedded=settings.freeze_encoder)
                    aux = None if settings.freeze_encoder else net.encoder.auxiliary_loss()
                total, ce, reg = multitask_loss(logits, likes, labels, targets, settings)
                if aux is not None:
                    total = total + aux
                accelerator.backward(total)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            sums += [total.item(), ce.item(), reg.item()]
            steps += 1
            images_seen += len(labels) * accelerator.num_processes
            reporter.step(epoch, total.item())
        epoch_seconds = time.perf_counter() - epoch_start
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": sums[0] / max(steps, 1),
            "train_ce": sums[1] / max(steps, 1),
            "train_likes_loss": sums[2] / max(steps, 1),
            **validation_metrics(run_inference(model, val_loader, accelerator, settings.freeze_encoder), settings),
            "lr": scheduler.get_last_lr()[0],
            "seconds": epoch_seconds,
            "images_per_second": steps * settings.batch_size * accelerator.num_processes / max(epoch_seconds, 1e-9),
        }
        improved = record["val_loss"] < state["best_val"] - 1e-4
        state.update(epoch=epoch, bad_epochs=0 if improved else state["bad_epochs"] + 1)
        if improved:
            state.update(best_val=record["val_loss"], best_epoch=epoch)
        if accelerator.is_main_process:
            if improved:
                save_model(run, net, config)
            with open(run / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
        accelerator.wait_for_everyone()
        accelerator.save_state(str(checkpoint))
        if accelerator.is_main_process:
            write_json(checkpoint / "trainer_state.json", state)
        reporter.epoch_end({**record, "best": improved})
        out_of_time = settings.time_budget is not None and time.perf_counter() - started > settings.time_budget
        if state["bad_epochs"] >= settings.patience or out_of_time:
            break

    seconds = time.perf_counter() - started
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = next(r for r in history if r["epoch"] == state["best_epoch"])
    if accelerator.is_main_process:
        from instacli.plots import plot_curves

        plot_curves(history, run / "curves.png")
        # The resume checkpoint is accelerate's format (it pickles RNG and optimizer state); a finished
        # run keeps only safetensors and JSON.
        shutil.rmtree(checkpoint, ignore_errors=True)
    result = TrainResult(
        run=run, best_epoch=state["best_epoch"], epochs_run=state["epoch"], best=best,
        seconds=seconds, images_per_second=images_seen / max(seconds, 1e-9),
    )
    reporter.finish(result.__dict__)
    return result
