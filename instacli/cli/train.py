"""``instacli train``: parse flags, resolve settings, call :func:`instacli.training.train`, print."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from instacli.cli.common import console
from instacli.cli.progress import RichReporter
from instacli.settings import load_settings, parse_options, shown_default


app = typer.Typer()


@app.command("train")
def train_command(
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder from `instacli data build` (needed unless --resume, which reads the run's settings).", show_default=False),
    encoder: Optional[str] = typer.Option(None, help="Image encoder name (`instacli models list`).", show_default=shown_default("encoder")),
    regressor: Optional[str] = typer.Option(None, help="Likes regressor name.", show_default=shown_default("regressor")),
    preset: Optional[str] = typer.Option(None, help="Named encoder preset, e.g. seed-512 (the original design)."),
    pretrained: Optional[str] = typer.Option(None, help="Pretrained weights for the encoder: hub id, local path or 'imagenet'."),
    encoder_option: Optional[list[str]] = typer.Option(None, "--encoder-option", "-E", help="Encoder option KEY=VALUE (repeatable)."),
    regressor_option: Optional[list[str]] = typer.Option(None, "--regressor-option", "-R", help="Regressor option KEY=VALUE (repeatable)."),
    task: Optional[str] = typer.Option(None, help="auto|both|category|likes; auto trains what the data supports.", show_default=shown_default("task")),
    features: Optional[str] = typer.Option(None, help="Numeric inputs, comma-separated (comments,shares,followers).", show_default="all present"),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (early stopping may end sooner).", show_default=shown_default("epochs")),
    batch_size: Optional[int] = typer.Option(None, help="Images per batch and process.", show_default=shown_default("batch_size")),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate of AdamW.", show_default=shown_default("lr")),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay.", show_default=shown_default("weight_decay")),
    warmup_epochs: Optional[float] = typer.Option(None, help="Epochs of linear learning-rate warm-up before the cosine decay.", show_default=shown_default("warmup_epochs")),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing of the category loss.", show_default=shown_default("label_smoothing")),
    encoder_lr: Optional[float] = typer.Option(None, help="Separate learning rate for the encoder (fine-tuning)."),
    image_size: Optional[int] = typer.Option(None, help="Override the encoder's input size."),
    likes_loss: Optional[str] = typer.Option(None, help="l1|huber|mse on standardized log1p(likes).", show_default=shown_default("likes_loss")),
    likes_weight: Optional[float] = typer.Option(None, help="Weight w in loss = CE + w·likes loss.", show_default=shown_default("likes_weight")),
    patience: Optional[int] = typer.Option(None, help="Epochs without validation-loss improvement before stopping, counted in the second half of --epochs.", show_default=shown_default("patience")),
    freeze_encoder: Optional[bool] = typer.Option(None, "--freeze-encoder/--no-freeze-encoder", help="Train the heads only on cached embeddings. (default: the encoder's recipe — frozen for efficientnet-lite0)"),
    semantic_prior: Optional[str] = typer.Option(None, help="What the category head reads of a pretrained ImageNet head: auto (the encoder's recipe)|none|grouped|raw|both.", show_default=shown_default("semantic_prior")),
    probe_first: Optional[bool] = typer.Option(None, "--probe-first", help="LP-FT: fit the category head as a linear probe on the frozen encoder, then fine-tune everything (with --no-freeze-encoder)."),
    auto_augment: Optional[str] = typer.Option(None, help="timm auto-augment policy for encoders trained end to end: none|randaugment|trivialaugment or a timm string (rand-m9-mstd0.5, augmix-m5, original).", show_default=shown_default("auto_augment")),
    random_erasing: Optional[float] = typer.Option(None, help="Probability of timm random erasing per photo.", show_default=shown_default("random_erasing")),
    mixup: Optional[float] = typer.Option(None, help="timm mixup alpha (0 = off; --task category only: a blend has no likes count).", show_default=shown_default("mixup")),
    cutmix: Optional[float] = typer.Option(None, help="timm cutmix alpha (0 = off; --task category only).", show_default=shown_default("cutmix")),
    hue: Optional[float] = typer.Option(None, help="Largest random hue rotation of a training photo, in turns (0.5: any hue); for encoders trained end to end.", show_default=shown_default("hue")),
    grayscale: Optional[float] = typer.Option(None, help="Probability of turning a training photo gray; for encoders trained end to end.", show_default=shown_default("grayscale")),
    distill_from: Optional[str] = typer.Option(None, help="Teacher whose answers on crops of the training photos the model also learns: a trained run folder or an encoder name (e.g. efficientnet-lite0, its frozen-probe recipe fitted first). See README."),
    distill_weight: Optional[float] = typer.Option(None, help="Weight of the teacher's answers beside the labels in the category loss.", show_default=shown_default("distill_weight")),
    text: Optional[bool] = typer.Option(None, "--text/--no-text", help="Use captions as a third input (frozen text encoder)."),
    text_encoder: Optional[str] = typer.Option(None, help="Caption encoder name (minilm is bundled, works offline).", show_default=shown_default("text_encoder")),
    text_option: Optional[list[str]] = typer.Option(None, "--text-option", help="Text encoder option KEY=VALUE, e.g. pretrained=bert-base-uncased."),
    text_to_classifier: Optional[bool] = typer.Option(None, "--text-to-classifier", help="Feed captions to the category head too."),
    mixed_precision: Optional[str] = typer.Option(None, help="auto|no|bf16|fp16; auto picks bf16 where the hardware is fast at it.", show_default=shown_default("mixed_precision")),
    seed: Optional[int] = typer.Option(None, help="Random seed.", show_default=shown_default("seed")),
    workers: Optional[int] = typer.Option(None, help="Processes that decode images.", show_default=shown_default("workers")),
    grad_accum: Optional[int] = typer.Option(None, help="Gradient accumulation steps.", show_default=shown_default("grad_accum")),
    checkpoint_every: Optional[int] = typer.Option(None, help="Also checkpoint every N optimizer steps for --resume (0 = at epoch ends only).", show_default=shown_default("checkpoint_every")),
    time_budget: Optional[str] = typer.Option(None, help="Training time, e.g. 600, 90s, 10m, 1h30m (checked after each epoch)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder to create.", show_default="runs/<encoder>-<time>"),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Replace an existing run at --out."),
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue the run at --out from its last checkpoint."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with settings (flags and INSTACLI_* env win)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or tables."),
) -> None:
    """Train an encoder + heads on a dataset and write a run folder (model.safetensors, config.json, metrics)."""
    from instacli.launch import process_state, relaunch_cpu_processes  # torch loads only when a command runs
    from instacli.training import train, with_run_settings

    relaunch_cpu_processes()

    settings = load_settings(config, **with_run_settings(dict(
        data=data, encoder=encoder, regressor=regressor, preset=preset, pretrained=pretrained,
        encoder_options=parse_options(encoder_option, "--encoder-option"),
        regressor_options=parse_options(regressor_option, "--regressor-option"),
        task=task, features=features.split(",") if features else None, epochs=epochs, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, label_smoothing=label_smoothing,
        encoder_lr=encoder_lr, image_size=image_size, likes_loss=likes_loss, likes_weight=likes_weight,
        patience=patience, freeze_encoder=freeze_encoder, semantic_prior=semantic_prior,
        probe_first=probe_first, auto_augment=auto_augment, random_erasing=random_erasing, mixup=mixup, cutmix=cutmix, hue=hue, grayscale=grayscale,
        distill_from=distill_from, distill_weight=distill_weight, text=text, text_encoder=text_encoder,
        text_options=parse_options(text_option, "--text-option"), text_to_classifier=text_to_classifier, mixed_precision=mixed_precision, seed=seed,
        workers=workers, grad_accum=grad_accum, time_budget=time_budget, compile=compile, out=out,
        overwrite=overwrite, resume=resume, checkpoint_every=checkpoint_every,
    )))
    reporter = RichReporter(console, enabled=not quiet and process_state().is_main_process)
    train(settings, reporter)
