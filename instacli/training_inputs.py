"""What the training loop feeds, prepared once before the first epoch.

The network's config from the settings and the data; every photo decoded once (the decode cache),
or, with a frozen encoder, embedded once (the embedding cache); a distillation teacher's transfer photos;
the training augmentation; the data loaders. Caches are written by the main process while the
others wait (``main_process_first``), then read by all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator

from instacli.augment import Augmentation, eval_view
from instacli.embedding_cache import embeddings_path, load_embeddings, save_embeddings
from instacli.encoders import ImageEncoder, Preprocess
from instacli.errors import InstacliError
from instacli.launch import precision_autocast, process_state, resolve_mixed_precision
from instacli.model import ModelConfig, MultiTaskModel
from instacli.progress import Reporter
from instacli.settings import TrainSettings, encoder_options

if TYPE_CHECKING:  # the splits module brings in `datasets` (≈ 100 MB)
    from instacli.distill import TransferSet
    from instacli.split_arrays import SplitArrays


def model_config(settings: TrainSettings, split: SplitArrays, text: tuple[str, dict] | None) -> ModelConfig:
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

    return cached(embeddings_path(split.cache_key, encoder, options, precision), len(split), embed, accelerator)


def cached(path: Path | None, rows: int, compute: Callable[[], torch.Tensor], accelerator: Accelerator) -> torch.Tensor:
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


def transfer_set(
    split: SplitArrays, student: Preprocess, settings: TrainSettings, accelerator: Accelerator, reporter: Reporter
) -> TransferSet:
    """``--distill-from``'s teacher on the ``--distill-photos`` (:mod:`instacli.distill`): the photos
    decoded for the student, and the teacher's probabilities for crops of each. An encoder named as teacher
    first gets its frozen probe, fitted on its (cached) embeddings of the training photos."""
    from instacli.distill import VIEWS, TransferSet, teacher_model, transfer_files, view_boxes, view_probabilities
    from instacli.probe import fit_category_probe

    teacher, config, needs_head = teacher_model(str(settings.distill_from), split.class_names, split.scaler.to_dict())
    device = accelerator.device
    precision = resolve_mixed_precision("auto", config.encoder) if device.type == "cpu" else accelerator.mixed_precision
    if needs_head:
        embeddings = cached_embeddings(split, teacher.encoder, config.encoder_options, precision, settings, accelerator, reporter, f"teacher {config.encoder}")
        fit_category_probe(teacher, embeddings, split.labels)
    files = transfer_files(settings.distill_photos)
    teacher_images, readable = decoded_files(files, teacher.encoder.preprocess.resize_size, settings.workers)
    if not readable:
        raise InstacliError(f"--distill-photos {','.join(settings.distill_photos)}: no readable photo; give folders of photos")
    student_images, again = decoded_files(readable, student.resize_size, settings.workers)
    if again != readable:  # each answer must stay beside its photo
        raise InstacliError(f"--distill-photos: {len(readable) - len(again)} photos changed while they were read; run again")
    skipped = f" ({len(files) - len(readable)} unreadable files skipped)" if len(readable) < len(files) else ""
    boxes = view_boxes(len(student_images), student, settings.seed)
    with reporter.stage(f"teacher {config.encoder} labels {VIEWS} crops of {len(student_images)} transfer photos{skipped}", len(student_images)) as advance:
        answers = view_probabilities(teacher.to(device), config.temperature, teacher_images, boxes, device, precision, on_batch=advance)
    return TransferSet(student_images, boxes, answers)


def decoded_files(files: list[Path], size: int, workers: int) -> tuple[torch.Tensor, list[Path]]:
    """The readable ``files`` as uint8 squares of ``size``, and those files (in order)."""
    from instacli.prediction import decoded_batches

    images, readable = [], []
    for batch, rows, errors in decoded_batches(files, size, 64, workers):
        kept = torch.tensor([not error for error in errors], dtype=torch.bool)
        images.append(batch[kept])
        readable += [files[int(row)] for row, ok in zip(rows, kept) if ok]
    return torch.cat(images) if images else torch.empty(0, 3, size, size, dtype=torch.uint8), readable


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
    return Augmentation.create(
        model.encoder.preprocess, settings.auto_augment, settings.random_erasing, settings.mixup, settings.cutmix,
        len(config.class_names), settings.label_smoothing, accelerator.device, settings.hue, settings.grayscale,
    )


def loader(arrays: SplitArrays, inputs: torch.Tensor, batch_size: int, shuffle: bool, seed: int) -> torch.utils.data.DataLoader:
    """Batches of (inputs, features, targets, labels, text)."""
    dataset = torch.utils.data.TensorDataset(inputs, arrays.features, arrays.targets, arrays.labels, arrays.text)
    generator = torch.Generator().manual_seed(seed)
    global_batch = batch_size * process_state().num_processes  # N processes must drop (or keep) what one process would
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle and len(dataset) >= 4 * global_batch, generator=generator
    )
