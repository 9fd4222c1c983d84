"""Numeric inputs and the likes target, scaled the same way at train, evaluate and predict time.

Engagement counts span six orders of magnitude, so inputs and target are ``log1p``-transformed and
then standardized. Every statistic is fitted on the training split only and stored in the run's
``config.json`` (the design we started from fitted separate scalers on the test set, which leaks and
breaks predictions on new data). Missing inputs are imputed with the training median and counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated

import numpy as np
from pydantic import Field, FiniteFloat, NonNegativeInt

from instacli.errors import InstacliError
from instacli.registry import PositiveFloat

#: Numeric columns the model may use as inputs, in this order, when present in the data.
NUMERIC_COLUMNS = ("comments", "shares", "followers")


def as_float(values: Sequence[object]) -> np.ndarray:
    """Column → float64 array with ``None`` (missing) as NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


#: Most likes a prediction says: the largest whole number a float64 holds exactly, far beyond any post.
#: An absurd log1p (a run's edited target_mean, extreme weights) overflowed to inf, which no count
#: column holds (predict crashed converting it).
MAX_LIKES = float(2**53)


def likes_from_log(log_likes: np.ndarray) -> np.ndarray:
    """log1p likes → likes (non-negative, at most :data:`MAX_LIKES`)."""
    with np.errstate(over="ignore"):
        return np.clip(np.expm1(log_likes), 0.0, MAX_LIKES)


@dataclass
class Scaler:
    """Fitted statistics: feature names, imputation medians, log-space mean/std of inputs and target.

    The annotations are the bounds a run's ``config.json`` is checked against when loaded
    (:func:`instacli.model.load_run`): a NaN or zero ``target_std`` gave NaN likes without a word.
    """

    features: list[str]
    medians: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]
    mean: list[FiniteFloat]
    std: list[PositiveFloat]
    target_mean: FiniteFloat = 0.0
    target_std: PositiveFloat = 1.0
    likes_median: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    #: Missing (imputed) values per feature in the training split, for the record.
    train_missing: dict[str, NonNegativeInt] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not len(self.features) == len(self.medians) == len(self.mean) == len(self.std):
            raise ValueError(f"{len(self.features)} features but {len(self.medians)} medians, {len(self.mean)} means and {len(self.std)} stds")

    @classmethod
    def fit(cls, columns: Mapping[str, np.ndarray], features: Sequence[str], likes: np.ndarray | None) -> Scaler:
        """Fit on the training split: ``columns`` maps feature name → raw counts (NaN = missing)."""
        medians, means, stds, missing = [], [], [], {}
        for name in features:
            raw = columns[name]
            observed = raw[~np.isnan(raw)]
            missing[name] = int(raw.size - observed.size)
            if observed.size == 0:
                raise InstacliError(f"feature '{name}' has no values in the training split; drop it from --features")
            median = float(np.median(observed))
            logged = np.log1p(np.where(np.isnan(raw), median, raw))
            medians.append(median)
            means.append(float(logged.mean()))
            stds.append(float(logged.std()) or 1.0)
        scaler = cls(features=list(features), medians=medians, mean=means, std=stds, train_missing=missing)
        if likes is not None:
            observed = likes[~np.isnan(likes)]
            if observed.size:
                logged = np.log1p(observed)
                scaler.target_mean = float(logged.mean())
                scaler.target_std = float(logged.std()) or 1.0
                scaler.likes_median = float(np.median(observed))
        return scaler

    def transform(self, columns: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, int]:
        """Raw columns → standardized ``(n, F)`` float32 inputs and the number of imputed cells."""
        out = np.empty((n, len(self.features)), dtype=np.float32)
        imputed = 0
        for j, name in enumerate(self.features):
            raw = columns.get(name)
            raw = np.full(n, np.nan) if raw is None else raw
            missing = np.isnan(raw)
            imputed += int(missing.sum())
            logged = np.log1p(np.where(missing, self.medians[j], raw))
            out[:, j] = (logged - self.mean[j]) / self.std[j]
        return out, imputed

    def encode_target(self, likes: np.ndarray) -> np.ndarray:
        """Raw likes → standardized log1p likes (NaN stays NaN: a missing target is masked out)."""
        return ((np.log1p(likes) - self.target_mean) / self.target_std).astype(np.float32)

    def log_likes(self, z: np.ndarray) -> np.ndarray:
        """Standardized log1p likes → log1p likes: one scale for every run, where ensembles average."""
        return z * self.target_std + self.target_mean

    def decode_target(self, z: np.ndarray) -> np.ndarray:
        """Standardized log1p likes → likes (non-negative)."""
        return likes_from_log(self.log_likes(z))

    def to_dict(self) -> dict:
        return asdict(self)
