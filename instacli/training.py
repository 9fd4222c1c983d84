"""Training through ``accelerate``: the same code on a CPU, one GPU or many processes.

:func:`train` reads top to bottom: prepare the inputs once (:mod:`instacli.training_inputs`: the
splits, the network, every photo decoded or embedded once), build the loop (loaders, AdamW with
warm-up + cosine), then per epoch train, validate, keep the best weights and checkpoint
(:mod:`instacli.checkpoint`), and stop on patience, the time budget or the caller's ``should_stop``
(every process together, through accelerate's trigger); finally fit a scikit-learn regressor,
calibrate and draw the curves. Metrics are gathered across processes and only the main process
writes files (:mod:`instacli.run_folder`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import broadcast, set_seed
from safetensors.torch import load_file

from instacli import interrupts
from instacli.augment import Augmentation, eval_view
from instacli.calibration import calibrate
from instacli.checkpoint import TrainerState, load_checkpoint, new_trainer_state, save_checkpoint
from instacli.distill import TransferSet, check_student, distill_loss
from instacli.errors import InstacliError
from instacli.io import check_writable_target, output_lock
from instacli.launch import launched_on_cpu, process_state, resolve_mixed_precision
from instacli.model import ModelConfig, MultiTaskModel, build_model, save_model
from instacli.progress import Reporter
from instacli.run_folder import CHECKPOINT, CURVES, SETTINGS, TRACKER_LOGS, WEIGHTS, RunFolder, default_out
from instacli import tracking
from instacli.settings import TrainSettings, apply_recipe, check_components
from instacli.training_inputs import (
    cached_embeddings, embed_images, loader, model_config, split_inputs, training_augmentation, transfer_set,
)

if TYPE_CHECKING:  # the splits module brings in `datasets` (≈ 100 MB)
    from instacli.split_arrays import SplitArrays

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


class TrainingDiverged(InstacliError):
    """Not one epoch had a finite validation loss, so no weights were kept (``tune`` prunes such a trial)."""


class TrainingStopped(Exception):
    """``should_stop`` ended a run before its first epoch finished: there is no model to keep."""

    def __init__(self, images_seen: int, seconds: float) -> None:
        super().__init__(f"stopped after {seconds:.0f} s, before the first epoch ended")
        self.images_seen, self.seconds = images_seen, seconds


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


def check_built_dataset(data: Path) -> None:
    """Refuse a plain photo folder: it has no validation split, so accuracy, early stopping and the
    best epoch would all be measured on the training photos themselves."""
    from instacli_datasets.load import is_built_dataset

    if Path(data).is_dir() and not is_built_dataset(data):
        raise InstacliError(
            f"{data}: a plain photo folder has no validation split to train against; "
            f"build a dataset first: instacli data build {data} --out DATA, then train --data DATA"
        )


def _run_info(folder: RunFolder, accelerator: Accelerator) -> dict[str, Any]:
    return {"run": str(folder.path), "mixed_precision": accelerator.mixed_precision, "processes": accelerator.num_processes,
            "device": str(accelerator.device)}


# ----------------------------------------------------------------------------------------------
# The training run, in accelerate's by-feature shape: prepare the inputs, build the loop, then per
# epoch train, validate, keep the best and checkpoint, and stop on patience, time or request.


@dataclass
class Job:
    """One training run's fixed parts, shared by the steps below."""

    settings: TrainSettings
    folder: RunFolder
    accelerator: Accelerator
    reporter: Reporter
    should_stop: Callable[[], bool] | None = None


@dataclass
class Inputs:
    """What the epochs read, prepared once: the splits, the network and what its loaders feed."""

    train_split: SplitArrays
    val_split: SplitArrays
    config: ModelConfig
    model: MultiTaskModel
    train_inputs: torch.Tensor
    val_inputs: torch.Tensor
    augmentation: Augmentation
    #: ``--distill-from``: the transfer photos and the teacher's answers (:mod:`instacli.distill`).
    transfer: TransferSet | None


@dataclass
class Loop:
    """The objects ``accelerator.prepare`` returned, and the unwrapped network."""

    model: torch.nn.Module
    net: MultiTaskModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader


def train(
    settings: TrainSettings, reporter: Reporter | None = None, should_stop: Callable[[], bool] | None = None
) -> TrainResult:
    """Train one model as ``settings`` says and write the run folder; returns a summary.

    ``should_stop``, asked after every batch, stops the run at once in every process: the best
    epoch so far becomes the run, or :class:`TrainingStopped` is raised before the first epoch ends.
    The main process holds the run folder's lock throughout: a second ``train --out`` to the same
    folder fails at once instead of mixing its settings and weights with this run's."""
    wall_started = time.perf_counter()  # the summary's time counts reading, decoding and embedding too
    settings = apply_recipe(settings)
    check_components(settings)
    tracking.check_installed(settings.report_to)
    check_built_dataset(settings.data)
    folder = RunFolder(settings.out or default_out(settings.encoder))
    folder.check_usable_as_out()
    with output_lock(folder.path) if process_state().is_main_process else nullcontext():
        job = Job(settings, folder, make_accelerator(settings, folder), reporter or Reporter(), should_stop)
        try:
            return _train(job, wall_started)
        finally:
            job.accelerator.end_training()  # closes the trackers, also after an error


def _train(job: Job, wall_started: float) -> TrainResult:
    """:func:`train` once the run folder is checked and locked: the whole run, top to bottom."""
    settings, folder, accelerator, reporter = job.settings, job.folder, job.accelerator, job.reporter
    if not settings.resume:  # every process checks, so that all of them stop with the same message
        check_writable_target(folder / CHECKPOINT, settings.overwrite, "a run in progress (use --resume)")
        check_writable_target(folder / WEIGHTS, settings.overwrite, "a trained run")
    set_seed(settings.seed)
    inputs = prepare_inputs(job)
    if not any(p.requires_grad for p in inputs.model.parameters()):  # frozen: probe fitted, regressor absent or fitted after
        return fit_directly(job, inputs, wall_started)
    loop = prepare_loop(job, inputs)
    set_seed(settings.seed, device_specific=True)  # augmentation and dropout differ between processes
    state = start_or_resume(job, loop)
    tracking.start(accelerator, folder.path, settings.model_dump(mode="json"))
    reporter.start(settings.epochs, len(loop.train_loader), _run_info(folder, accelerator))
    resumed_seconds = state["seconds"]
    started = time.perf_counter() - resumed_seconds  # the time budget counts the time before an interruption
    for epoch in range(state["epoch"] + 1, settings.epochs + 1):
        epoch_started = time.perf_counter() - state["epoch_seconds"]
        sums, steps, stopped = train_epoch(job, inputs, loop, state, epoch, started)
        if stopped and not state["history"]:
            raise TrainingStopped(state["images_seen"], time.perf_counter() - started)
        if stopped:  # a partial epoch is not scored: the best finished epoch is the run
            break
        record = end_epoch(job, inputs, loop, state, epoch, sums, steps, time.perf_counter() - epoch_started, started)
        reporter.epoch_end(record)
        if settings.time_budget is not None and state["seconds"] > settings.time_budget:
            accelerator.set_trigger()  # each process reads its own clock: one out of time stops them all, together
        if state["bad_epochs"] >= settings.patience or accelerator.check_trigger():  # bad_epochs: from gathered metrics, alike everywhere
            break
    train_seconds = time.perf_counter() - started
    if not state["best_epoch"]:  # not one finite validation loss, so no weights were saved (finish_run failed reading them)
        raise TrainingDiverged(f"{folder.path}: training diverged (validation loss {state['history'][-1]['val_loss']} after "
                            f"{len(state['history'])} epoch(s)), nothing was saved; train again with --overwrite and a lower --lr than {settings.lr:g}")
    finish_run(job, inputs, loop, state["history"])
    best = next(r for r in state["history"] if r["epoch"] == state["best_epoch"])
    result = TrainResult(
        run=folder.path, best_epoch=state["best_epoch"], epochs_run=state["epoch"], best=best,
        seconds=resumed_seconds + time.perf_counter() - wall_started,  # wall time, before an interruption too
        images_per_second=state["images_seen"] / max(train_seconds, 1e-9), optimizer_steps=state["optimizer_steps"],
    )
    reporter.finish(result.__dict__)
    return result


def make_accelerator(settings: TrainSettings, folder: RunFolder) -> Accelerator:
    return Accelerator(
        log_with=settings.report_to or None,
        project_dir=str(folder / TRACKER_LOGS) if settings.report_to else None,
        cpu=launched_on_cpu(),
        mixed_precision=resolve_mixed_precision(settings.mixed_precision, settings.encoder),
        gradient_accumulation_steps=settings.grad_accum,
        step_scheduler_with_optimizer=False,  # the schedule counts optimizer steps, stepped below on each one
        # The shuffle of epoch e depends on seed + e only, so a resumed epoch skips exactly the batches it had done.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=settings.seed),
    )


def prepare_inputs(job: Job) -> Inputs:
    """Read the splits, build the network, decode (or embed) every photo once, ask the distillation
    teacher, and fit the category probe of a frozen or LP-FT encoder."""
    settings, accelerator, reporter = job.settings, job.accelerator, job.reporter
    text = (settings.text_encoder, dict(settings.text_options)) if settings.text else None
    from instacli.split_arrays import load_split_arrays

    with reporter.stage(f"reading {settings.data}"):
        train_split = load_split_arrays(settings.data, "train", settings, text=text)
        val_split = load_split_arrays(settings.data, "validation", settings, scaler=train_split.scaler, task=train_split.task, text=text)
    config = model_config(settings, train_split, text)
    model = build_model(config)
    if model.regressor is not None and model.regressor.fits_after_training and config.task == "likes" and not settings.freeze_encoder:
        raise InstacliError(
            f"regressor '{settings.regressor}' is fitted after training and gives the encoder no gradient; "
            "with --task likes add --freeze-encoder or pick a neural regressor (conv1d, mlp, linear)"
        )
    if settings.freeze_encoder:  # embeddings never change: compute them once, train the heads only
        model.encoder.requires_grad_(False)
        model.to(accelerator.device)
    check_training_state_fits(model, accelerator.device)
    with accelerator.main_process_first():  # the main process decodes (and embeds); the others read its caches
        train_inputs = split_inputs(train_split, model, config, settings, accelerator, reporter)
        val_inputs = split_inputs(val_split, model, config, settings, accelerator, reporter)
    augmentation = training_augmentation(settings, config, model, accelerator)
    transfer = None
    if settings.distill_from is not None:
        check_student(config.task, bool(settings.freeze_encoder), settings.text_to_classifier)
        with accelerator.main_process_first():
            transfer = transfer_set(train_split, model.encoder.preprocess, settings, accelerator, reporter)
    inputs = Inputs(train_split, val_split, config, model, train_inputs, val_inputs, augmentation, transfer)
    fit_probe(job, inputs)
    return inputs


def check_training_state_fits(model: MultiTaskModel, device: torch.device) -> None:
    """One line, before any photo is decoded, when training on the CPU needs more memory than is available
    for the gradients and AdamW's two moments of the trainable weights (12 bytes each beside the weights
    already built): the kernel would otherwise kill the process mid-epoch without a word."""
    import psutil

    if device.type != "cpu":  # an accelerator's own memory: torch says so itself when it runs out
        return
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    needed, available = trainable * 12, psutil.virtual_memory().available
    if needed > available:
        raise InstacliError(
            f"training {trainable:,} weights needs {needed / 2**30:,.1f} GiB for their gradients and optimizer state, more than the "
            f"{available / 2**30:,.1f} GiB of memory available; choose a smaller model (-E options) or add --freeze-encoder"
        )


def fit_probe(job: Job, inputs: Inputs) -> None:
    """A frozen encoder's category head is a linear probe fitted on its embeddings; with ``--probe-first``
    (LP-FT) that probe is where fine-tuning starts."""
    settings, model = job.settings, inputs.model
    if settings.probe_first and not inputs.config.probe_head:
        raise InstacliError("--probe-first fits the category head from the image alone; it needs categories and no --text-to-classifier")
    if not inputs.config.probe_head:
        return
    from instacli.probe import fit_category_probe

    embeddings = inputs.train_inputs if settings.freeze_encoder else cached_embeddings(
        inputs.train_split, model.encoder, inputs.config.encoder_options, job.accelerator.mixed_precision, settings,
        job.accelerator, job.reporter, f"{inputs.config.encoder}, before fine-tuning",
    )
    fit_category_probe(model, embeddings, inputs.train_split.labels)
    if not settings.freeze_encoder:
        for module in (model.classifier, model.prior_classifier):
            if module is not None:
                module.requires_grad_(True)


def prepare_loop(job: Job, inputs: Inputs) -> Loop:
    """Data loaders, AdamW with warm-up + cosine, all through ``accelerator.prepare``."""
    settings, accelerator = job.settings, job.accelerator
    train_loader = loader(inputs.train_split, inputs.train_inputs, settings.batch_size, shuffle=True, seed=settings.seed)
    val_loader = loader(inputs.val_split, inputs.val_inputs, settings.batch_size * 2, shuffle=False, seed=settings.seed)
    optimizer = torch.optim.AdamW(_param_groups(inputs.model, settings), betas=(0.9, 0.999))
    # optimizer steps per epoch and process: accelerate gives each process ceil(batches / processes) batches
    steps_per_epoch = math.ceil(math.ceil(len(train_loader) / accelerator.num_processes) / settings.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(int(settings.warmup_epochs * steps_per_epoch), settings.epochs * steps_per_epoch)
    )
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(inputs.model, optimizer, train_loader, val_loader, scheduler)
    if settings.compile:
        model = torch.compile(model)
    return Loop(model, accelerator.unwrap_model(model), optimizer, scheduler, train_loader, val_loader)


def start_or_resume(job: Job, loop: Loop) -> TrainerState:
    """A new run's state and folder, or the state of ``--resume``'s checkpoint."""
    if not job.settings.resume:
        if job.accelerator.is_main_process:
            job.folder.start(job.settings.model_dump(mode="json"))
        return new_trainer_state()
    state = load_checkpoint(job.accelerator, job.folder)
    if job.accelerator.is_main_process:  # forget records of an epoch that ran past the checkpoint
        job.folder.write_history(state["history"])
    return state


def with_transfer_photos(
    views: torch.Tensor, pixels: torch.Tensor, features: torch.Tensor, text: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch with the transfer photos' ``views`` appended: they pass through the same forward
    (one call of the wrapped model, as distributed training needs), with zero (mean) numbers and captions."""
    extra = len(views)
    return (torch.cat([pixels, views]), torch.cat([features, features.new_zeros(extra, features.shape[1])]),
            torch.cat([text, text.new_zeros(extra, *text.shape[1:])]))


def train_epoch(
    job: Job, inputs: Inputs, loop: Loop, state: TrainerState, epoch: int, started: float
) -> tuple[np.ndarray, int, bool]:
    """One epoch of optimizer steps (from a mid-epoch checkpoint's batch on a resume); returns the
    summed (total, CE, likes) losses, the batches run, and whether ``should_stop`` cut it short."""
    settings, accelerator, model, net = job.settings, job.accelerator, loop.model, loop.net
    model.train()
    if settings.freeze_encoder:
        net.encoder.eval()
    loop.train_loader.set_epoch(epoch)
    done = state["batch"]
    batches = accelerator.skip_first_batches(loop.train_loader, done) if done else loop.train_loader
    accelerator.step = done  # accumulation groups start with the epoch (accelerate resets at its end)
    epoch_start = time.perf_counter() - state["epoch_seconds"]
    sums, steps = np.array(state["sums"], dtype=np.float64), state["steps"]
    accum, n_batches = settings.grad_accum, len(loop.train_loader)
    for index, (pixels_or_embeddings, features, targets, labels, text) in enumerate(batches, start=done):
        with accelerator.accumulate(model):
            taught = None
            if settings.freeze_encoder:
                pixels, soft_labels = pixels_or_embeddings, None
            else:
                pixels, soft_labels = inputs.augmentation.mix(inputs.augmentation.view(pixels_or_embeddings), labels)
            if inputs.transfer is not None:
                photos, boxes, taught = inputs.transfer.batch(len(labels), settings.seed, epoch, index, accelerator.process_index)
                pixels, features, text = with_transfer_photos(inputs.augmentation.view(photos.to(pixels.device), boxes), pixels, features, text)
            with accelerator.autocast():
                logits, likes = model(pixels, features, text, embedded=settings.freeze_encoder)
                aux = None if settings.freeze_encoder else net.encoder.auxiliary_loss()
            if taught is not None:  # the transfer photos' rows come last; they have no label and no likes
                transfer_logits, logits, likes = logits[len(labels):], logits[: len(labels)], likes[: len(labels)] if likes is not None else None
            total, ce, reg = multitask_loss(logits, likes, labels, targets, settings, soft_labels)
            if aux is not None:
                total = total + aux
            if taught is not None:
                total = total + settings.distill_weight * distill_loss(transfer_logits, taught.to(logits.device))
            # accelerate divides every loss by grad_accum; the epoch's last group may be shorter
            group = min(accum, n_batches - index // accum * accum)
            accelerator.backward(total if group == accum else total * (accum / group))
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            loop.optimizer.step()
            if accelerator.sync_gradients:
                loop.scheduler.step()
            loop.optimizer.zero_grad(set_to_none=True)
        loss = total.item()
        sums += [loss, ce.item(), reg.item()]
        steps += 1
        state["images_seen"] += len(labels) * accelerator.num_processes
        job.reporter.step(epoch, sums[0] / steps)
        if accelerator.sync_gradients:
            state["optimizer_steps"] += 1
            accelerator.log({"train/loss": loss, "train/lr": loop.scheduler.get_last_lr()[0]}, step=state["optimizer_steps"])
            every = settings.checkpoint_every
            if every and state["optimizer_steps"] % every == 0 and index + 1 < n_batches:
                now = time.perf_counter()
                state.update(batch=index + 1, steps=steps, epoch_seconds=now - epoch_start, seconds=now - started,
                             sums=accelerator.reduce(torch.from_numpy(sums), "mean").tolist())
                save_checkpoint(accelerator, job.folder, state)
        interrupts.check()  # a Ctrl-C that a finalizer swallowed (e.g. the last epoch's loader shutting down) stops here
        if job.should_stop is not None:  # asked in every process, agreed on by all of them
            if job.should_stop():
                accelerator.set_trigger()
            if accelerator.check_trigger():
                return sums, steps, True
    return sums, steps, False


def end_epoch(
    job: Job, inputs: Inputs, loop: Loop, state: TrainerState, epoch: int, sums: np.ndarray, steps: int,
    epoch_seconds: float, started: float,
) -> dict[str, Any]:
    """Validate, count towards early stopping, keep the best weights, append the epoch's record and
    checkpoint; returns the record (with ``best``: whether it improved)."""
    settings, accelerator = job.settings, job.accelerator
    sums = accelerator.reduce(torch.from_numpy(sums), "mean").numpy()  # every process's mean loss
    record: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": sums[0] / max(steps, 1),
        "train_ce": sums[1] / max(steps, 1),
        "train_likes_loss": sums[2] / max(steps, 1),
        **validation_metrics(run_inference(loop.model, loop.val_loader, accelerator, settings.freeze_encoder), settings),
        "lr": loop.scheduler.get_last_lr()[0],
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
            save_model(job.folder.path, loop.net, inputs.config)
        job.folder.append_history(record)
    state["seconds"] = time.perf_counter() - started
    save_checkpoint(accelerator, job.folder, state)
    tracking.log_epoch(accelerator, record, state["optimizer_steps"])
    return {**record, "best": improved}


def _best_weights(folder: RunFolder, net: torch.nn.Module, accelerator: Accelerator) -> dict[str, torch.Tensor]:
    """The best epoch's weights, read by the main process (which wrote them) and sent to the others: on
    another machine the run folder is not there (it failed with ``No such file: run/model.safetensors``)."""
    if accelerator.is_main_process:
        weights = {name: value.to(accelerator.device) for name, value in load_file(str(folder / WEIGHTS)).items()}
    else:  # a buffer of the right shapes for the broadcast to fill
        weights = {name: value.detach().clone() for name, value in net.state_dict().items()}
    return broadcast(dict(sorted(weights.items())))  # one order on every process: tensors are sent one by one


def finish_run(job: Job, inputs: Inputs, loop: Loop, history: list[dict[str, Any]]) -> None:
    """After the last epoch: fit a scikit-learn regressor on the best weights, calibrate the category
    head on validation, draw the curves, and delete the checkpoint."""
    settings, accelerator, folder, net = job.settings, job.accelerator, job.folder, loop.net
    if net.regressor is not None and net.regressor.fits_after_training and accelerator.is_main_process:
        with job.reporter.stage(f"fitting {settings.regressor} on {len(inputs.train_split)} training embeddings"):
            fit_classical_regressor(folder.path, net, inputs.config, inputs.train_split, inputs.train_inputs, settings.freeze_encoder, accelerator)
    if net.classifier is not None:  # temperature and unfamiliarity threshold of the best epoch's weights
        n = len(inputs.val_split)
        with job.reporter.stage(f"calibrating on {n} validation images", n) as advance:
            accelerator.wait_for_everyone()
            net.load_state_dict(_best_weights(folder, net, accelerator))
            out = run_inference(loop.model, loop.val_loader, accelerator, settings.freeze_encoder)
            advance(n)
            if accelerator.is_main_process:
                inputs.config.temperature, inputs.config.unfamiliar_threshold = calibrate(out["logits"], out["labels"])
                save_model(folder.path, net, inputs.config)
    if accelerator.is_main_process:
        from instacli.plots import plot_curves

        plot_curves(history, folder / CURVES)
        folder.remove_checkpoints()  # accelerate's pickles: a finished run keeps only safetensors and JSON
    tracking.log_curves(accelerator, folder / CURVES)


def fit_directly(job: Job, inputs: Inputs, wall_started: float) -> TrainResult:
    """Frozen encoder with nothing left for gradients (the category probe already fitted, the likes
    regressor ``ridge``/``gbrt`` or absent): there are no epochs (an optimizer would even refuse the
    empty parameter list). Fit the regressor on the training embeddings, score both splits once, and
    write an ordinary run folder with one metrics record."""
    settings, accelerator, reporter, net = job.settings, job.accelerator, job.reporter, inputs.model
    train_split, val_split = inputs.train_split, inputs.val_split
    reporter.start(0, 0, _run_info(job.folder, accelerator))
    with reporter.stage(f"fitting {settings.regressor if net.regressor is not None else 'the category head'} on {len(train_split)} training embeddings"):
        if net.regressor is not None:
            fit_regressor(net, train_split, inputs.train_inputs, accelerator)
        trained = validation_metrics(heads_outputs(net, train_split, inputs.train_inputs, accelerator.device), settings)
    validation = heads_outputs(net, val_split, inputs.val_inputs, accelerator.device)
    if validation["logits"].shape[1]:
        inputs.config.temperature, inputs.config.unfamiliar_threshold = calibrate(validation["logits"], validation["labels"])
    seconds = time.perf_counter() - wall_started  # the one "epoch" is the whole run: reading, embedding, fitting
    record: dict[str, Any] = {
        "epoch": 0,  # no epochs: fitted directly
        **{key.replace("val_", "train_"): value for key, value in trained.items()},
        **validation_metrics(validation, settings),
        "optimizer_steps": 0, "seconds": seconds, "images_per_second": len(train_split) / seconds,
        "images_seen": len(train_split), "elapsed": seconds,
    }
    if accelerator.is_main_process:
        job.folder.start(settings.model_dump(mode="json"))
        save_model(job.folder.path, net, inputs.config)
        job.folder.write_history([record])
    accelerator.wait_for_everyone()
    tracking.start(accelerator, job.folder.path, settings.model_dump(mode="json"))
    tracking.log_epoch(accelerator, record, 0)
    reporter.epoch_end({**record, "best": True})
    result = TrainResult(run=job.folder.path, best_epoch=0, epochs_run=0, best=record, seconds=seconds,
                         images_per_second=len(train_split) / seconds)
    reporter.finish(result.__dict__)
    return result
