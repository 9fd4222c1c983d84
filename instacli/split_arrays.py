"""A dataset split as the tensors the trainer and evaluator need.

Reads a split (a saved dataset or a plain class-folder tree), turns engagement columns into scaled
numeric inputs and the standardized log1p(likes) target, labels into class indices (-1 = no label),
and hands out the decoded images through the shared decode cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from instacli.errors import InstacliError
from instacli.features import NUMERIC_COLUMNS, Scaler, as_float
from instacli.decode_cache import decode_split


@dataclass
class SplitArrays:
    """One split: model inputs besides the pixels, plus what is needed to decode those."""

    name: str
    dataset: datasets.Dataset
    class_names: list[str]
    scaler: Scaler
    features: torch.Tensor  # (N, F) float32, scaled
    targets: torch.Tensor  # (N,) float32 standardized log1p likes, NaN = unknown
    labels: torch.Tensor  # (N,) int64, -1 = unknown
    likes: np.ndarray  # (N,) raw likes, NaN = unknown
    imputed: int
    cache_key: str | None
    task: str
    text: torch.Tensor  # (N, T) float32 caption embeddings; T = 0 without captions
    info: Any = None  # the data's instacli_datasets.DataInfo (engagement kind, generator params)

    def images(self, size: int, workers: int = 2, on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
        """Decoded ``(N, 3, size, size)`` uint8 images, from the cache when this split was decoded before."""
        encoded = self.dataset.cast_column("image", datasets.Image(decode=False))["image"]
        return decode_split(encoded, size, self.cache_key, workers, on_batch)

    def __len__(self) -> int:
        return len(self.labels)


def resolve_task(task: str, has_labels: bool, has_likes: bool, data: Path) -> str:
    """``auto`` picks what the data supports; an explicit task the data cannot support is an error."""
    if task == "auto":
        if has_labels and has_likes:
            return "both"
        if has_labels:
            return "category"
        if has_likes:
            return "likes"
        raise InstacliError(f"{data}: has neither labels nor likes; rebuild it with categories or --engagement")
    if task in ("both", "category") and not has_labels:
        raise InstacliError(f"{data}: has no category labels, so --task {task} cannot train; use --task likes")
    if task in ("both", "likes") and not has_likes:
        raise InstacliError(f"{data}: has no likes; add engagement with `instacli data build --engagement FILE` or use --task category")
    return task


def caption_embeddings(ds: datasets.Dataset, text: tuple[str, dict] | None, key: str | None, data: Path) -> torch.Tensor:
    """Frozen text-encoder vectors of the split's captions (missing captions embed as empty text)."""
    if text is None:
        return torch.zeros(len(ds), 0)
    if "caption" not in ds.column_names:
        raise InstacliError(f"{data}: has no caption column, so --text cannot be used; add captions to the engagement table")
    from instacli.text import embed_texts

    return torch.from_numpy(embed_texts(text[0], text[1], ds["caption"], key))


def load_split_arrays(
    data: Path,
    split: str,
    settings: object,
    scaler: Scaler | None = None,
    task: str | None = None,
    text: tuple[str, dict] | None = None,
) -> SplitArrays:
    """Load ``split`` of ``data``; fit the scaler here when none is given (that is: on the training split).

    ``text`` is ``(text encoder name, options)`` when captions are an input.
    """
    from instacli_datasets import load_data

    ds, info = load_data(Path(data), split=split)
    if len(ds) == 0:
        raise InstacliError(f"{data}: split '{split}' is empty; rebuild the dataset with more photos or other fractions")
    n = len(ds)
    columns = {name: as_float(ds[name]) for name in NUMERIC_COLUMNS if name in ds.column_names}
    likes = as_float(ds["likes"]) if "likes" in ds.column_names else np.full(n, np.nan)
    labels = np.asarray(ds["label"], dtype=np.int64) if "label" in ds.column_names else np.full(n, -1)
    if scaler is None:
        available = [c for c in NUMERIC_COLUMNS if c in columns and not np.isnan(columns[c]).all()]
        wanted = list(getattr(settings, "features", None) or available)
        unknown = [c for c in wanted if c not in available]
        if unknown:
            raise InstacliError(f"{data}: feature(s) {', '.join(unknown)} not in the data; available: {', '.join(available) or 'none'}")
        task = resolve_task(getattr(settings, "task", "auto"), bool((labels >= 0).any()), bool((~np.isnan(likes)).any()), Path(data))
        if task == "category":  # no likes head reads them: nothing to scale, impute or ask for at predict time
            wanted = []
        scaler = Scaler.fit(columns, wanted, likes if task != "category" else None)
    features, imputed = scaler.transform(columns, n)
    targets = scaler.encode_target(likes) if task != "category" else np.full(n, np.nan, dtype=np.float32)
    if task == "likes":
        labels = np.full(n, -1)
    key = f"{info.fingerprint}-{split}" if getattr(info, "fingerprint", None) else None
    return SplitArrays(
        name=split, dataset=ds, class_names=list(info.class_names), scaler=scaler,
        features=torch.from_numpy(features), targets=torch.from_numpy(targets), labels=torch.from_numpy(labels),
        likes=likes, imputed=imputed, cache_key=key, task=task or "both",
        text=caption_embeddings(ds, text, key, Path(data)), info=info,
    )
