"""One answer from several passes over a photo: test-time augmentation views and ensembles of runs.

Every *member* (one run on one view, :func:`instacli.augment.tta_views`) answers, per photo: class
probabilities calibrated by its run's temperature, the uncalibrated ones (for the ECE before
calibration), the energy unfamiliarity score and log1p likes. :func:`combine` takes the plain mean of
each over the members, so every column comes from the averaged numbers: the label and ``confidence``
are the argmax and max of the mean probabilities; likes are averaged in log space (a run that says
2× and one that says ½× cancel, as they would not in counts); a photo is ``unfamiliar`` when the
mean score passes the mean of the runs' thresholds. One run and one view give exactly that run's own
answer. Every run gets the same views, so each run weighs the same whatever its view count.

Runs joined in an ensemble must answer the same question: the same task and class names in the same
order (:func:`check_compatible`). Each reads the photos at its own size and normalization.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from instacli.augment import tta_views
from instacli.calibration import probabilities, unfamiliarity
from instacli.errors import InstacliError
from instacli.features import likes_from_log
from instacli.model import LoadedRun

Member = dict[str, np.ndarray]


def check_compatible(runs: Sequence[LoadedRun]) -> None:
    """Refuse an ensemble whose runs predict different things (a class order mismatch would silently average wrong columns)."""
    first = runs[0]
    for other in runs[1:]:
        for what in ("task", "class_names"):
            a, b = getattr(first.config, what), getattr(other.config, what)
            if a != b:
                raise InstacliError(f"{first.path} and {other.path} cannot be averaged: {what} {a} vs {b}; ensemble runs trained on the same categories")


def score_views(run: LoadedRun, images: torch.Tensor, features: torch.Tensor, text: torch.Tensor | None, tta: str) -> list[Member]:
    """One member per test-time view of a batch of decoded uint8 ``images`` (call under inference
    mode, with the run's model on the images' device)."""
    temperature, n = run.config.temperature, len(images)
    members = []
    for pixels in tta_views(images, run.preprocess, tta):
        logits, likes_z = run.model(pixels, features, text)
        if logits is None:
            member = {"probs": np.zeros((n, 0), np.float32), "uncalibrated": np.zeros((n, 0), np.float32), "unfamiliarity": np.full(n, np.nan)}
        else:
            member = {"probs": probabilities(logits, temperature), "uncalibrated": probabilities(logits),
                      "unfamiliarity": unfamiliarity(logits, temperature)}
        member["log_likes"] = run.scaler.log_likes(likes_z.float().cpu().numpy()) if likes_z is not None else np.full(n, np.nan)
        members.append(member)
    return members


def threshold(runs: Sequence[LoadedRun]) -> float | None:
    """The unfamiliarity threshold of the ensemble: the mean of its runs'; None if a run has none (from before calibration)."""
    values = [run.config.unfamiliar_threshold for run in runs]
    return None if any(v is None for v in values) else float(np.mean(values))


def combine(members: Sequence[Member], runs: Sequence[LoadedRun]) -> dict[str, np.ndarray | None]:
    """The mean of every member's answer, plus ``likes`` (counts) and ``unfamiliar`` (None without a
    threshold or a category head)."""
    answer: dict[str, np.ndarray | None] = {key: np.mean([m[key] for m in members], axis=0) for key in members[0]}
    answer["likes"] = likes_from_log(answer["log_likes"])
    limit = threshold(runs)
    answer["unfamiliar"] = answer["unfamiliarity"] > limit if limit is not None and answer["probs"].shape[1] else None
    return answer
