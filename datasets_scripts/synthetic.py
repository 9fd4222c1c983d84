"""Made-up engagement for photos that have none, so the likes model can be exercised end to end.

Two generators, both drawing with ``numpy.random.default_rng(seed)`` over the photos in file-name
order (the same photos and seed give the same numbers):

``seed`` is the original design's generator: per photo, independent uniform integers
``comments ~ U{1..10^(e-2)}``, ``shares ~ U{1..10^(e-1)}``, ``likes ~ U{1..10^e}`` where the
likes exponent ``e`` depends only on the category: ``landscape`` 6 and ``animal`` 5 (the original
table: landscape comments ≤ 10^4, shares ≤ 10^5, likes ≤ 10^6; animal one decade lower). Any other
category gets ``e = 4 + (its index among the unknown names, sorted) mod 3``, so a dataset of
arbitrary categories still has categories that differ by decades. Comments, then shares, then
likes are drawn for all photos at once.

``realistic`` mimics real posts, where the audience size explains most of the likes. Per photo,
with ``k`` its category (parameters are the defaults of :data:`REALISTIC_DEFAULTS`):

* followers ``= max(1, round(exp(N(ln 2000, 1.5²))))`` (log-normal: heavy-tailed, median 2000);
* latent log-likes ``L = 0.8 · ln(followers) + effect[k] + N(0, 1.14²)``, likes ``= round(exp(L))``;
  effect is +0.25 for landscape, −0.25 for animal, and −0.3/0/+0.3 cycling over the other
  category names in sorted order (0 for unlabeled photos);
* comments ``= round(exp(ln 0.02 + ln(1 + likes) + N(0, 0.7²)))``: about 2 % of likes;
* shares stay missing (Instagram does not publish them) and no caption or timestamp is made.

These values put Spearman(log likes, log followers) at about 0.70. Because comments are drawn
*from* the likes, they carry information about the noise term: the best possible prediction of
``log1p(likes)`` uses category, followers and comments, and :func:`oracle_log_likes` computes it
exactly (the posterior mean under this model), giving evaluation a floor to compare models with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

KNOWN_LIKES_EXPONENTS = {"landscape": 6, "animal": 5}


def likes_exponents(class_names: Sequence[str]) -> dict[str, int]:
    """The likes decade of every category (see the module docstring)."""
    unknown = sorted(n for n in class_names if n not in KNOWN_LIKES_EXPONENTS)
    exponents = {n: 4 + i % 3 for i, n in enumerate(unknown)}
    return {n: KNOWN_LIKES_EXPONENTS.get(n) or exponents[n] for n in class_names}


def seed_engagement(labels: Sequence[int], class_names: Sequence[str], seed: int) -> dict[str, list[int]]:
    """``{"comments": [...], "shares": [...], "likes": [...]}`` for rows with these label indices."""
    exponents = likes_exponents(class_names)
    e = np.array([exponents[class_names[label]] for label in labels], dtype=np.int64)
    rng = np.random.default_rng(seed)
    return {
        column: rng.integers(1, 10 ** (e - drop), endpoint=True).tolist()
        for column, drop in (("comments", 2), ("shares", 1), ("likes", 0))
    }


#: The columns each generator fills.
SYNTHETIC_COLUMNS = {"seed": ("likes", "comments", "shares"), "realistic": ("likes", "comments", "followers")}
SYNTHETIC_KINDS = tuple(SYNTHETIC_COLUMNS)
REALISTIC_DEFAULTS = {
    "followers_log_median": math.log(2000.0),
    "followers_log_sigma": 1.5,
    "likes_intercept": 0.0,
    "likes_per_log_follower": 0.8,
    "likes_log_sigma": 1.14,
    "comments_log_ratio": math.log(0.02),
    "comments_log_sigma": 0.7,
}
KNOWN_CLASS_EFFECTS = {"landscape": 0.25, "animal": -0.25}


def realistic_params(class_names: Sequence[str]) -> dict[str, Any]:
    """The parameters of the ``realistic`` model for these categories (recorded in the dataset)."""
    unknown = sorted(n for n in class_names if n not in KNOWN_CLASS_EFFECTS)
    effects = {n: 0.3 * (i % 3 - 1) for i, n in enumerate(unknown)} | KNOWN_CLASS_EFFECTS
    return {"model": "realistic", **REALISTIC_DEFAULTS, "class_names": list(class_names),
            "class_effects": [effects[n] for n in class_names]}


def _class_effect(labels: Sequence[int], params: Mapping[str, Any]) -> np.ndarray:
    effects = np.asarray([*params["class_effects"], 0.0])  # label -1 (unlabeled) picks the trailing 0
    return effects[np.asarray(labels, dtype=np.int64)]


def _prior_log_likes(labels: Sequence[int], followers: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    return params["likes_intercept"] + params["likes_per_log_follower"] * np.log(followers) + _class_effect(labels, params)


def realistic_engagement(labels: Sequence[int], params: Mapping[str, Any], seed: int) -> dict[str, list[int]]:
    """``{"followers", "likes", "comments"}`` drawn from the ``realistic`` model (module docstring)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    followers = np.maximum(1, np.rint(np.exp(rng.normal(params["followers_log_median"], params["followers_log_sigma"], n))))
    log_likes = _prior_log_likes(labels, followers, params) + rng.normal(0.0, params["likes_log_sigma"], n)
    likes = np.rint(np.exp(log_likes))
    comments = np.rint(np.exp(params["comments_log_ratio"] + np.log1p(likes) + rng.normal(0.0, params["comments_log_sigma"], n)))
    return {name: values.astype(np.int64).tolist() for name, values in
            (("followers", followers), ("likes", likes), ("comments", comments))}


def _column(rows: Any, name: str) -> np.ndarray:
    values = [row[name] for row in rows] if isinstance(rows, list) else rows[name]
    return np.asarray(list(values), dtype=float)


def oracle_log_likes(rows: Any, params: Mapping[str, Any], chunk: int = 4096) -> np.ndarray:
    """E[log1p(likes) | category, followers, comments] under the ``realistic`` model: the best possible
    predictor in squared error. ``rows``: a ``datasets.Dataset``, a dict of columns or a list of row
    dicts with ``label``, ``followers`` and ``comments``; ``params``: as recorded by the build.

    The latent log-likes is integrated out on a grid of ±7 standard deviations around its prior
    given category and followers, weighted by the probability of the observed comment count.
    """
    from scipy.special import ndtr  # here: every build imports this module, and scipy costs it 0.25 s

    labels = _column(rows, "label").astype(np.int64)
    followers, comments = _column(rows, "followers"), _column(rows, "comments")
    grid = np.linspace(-7.0, 7.0, 561)
    weights = np.exp(-0.5 * grid**2)
    sigma_c = params["comments_log_sigma"]
    result = np.empty(len(labels))
    for start in range(0, len(labels), chunk):
        part = slice(start, start + chunk)
        prior = _prior_log_likes(labels[part], followers[part], params)
        log1p_likes = np.log1p(np.rint(np.exp(prior[:, None] + params["likes_log_sigma"] * grid)))
        centre = params["comments_log_ratio"] + log1p_likes
        count = comments[part, None]
        upper = ndtr((np.log(count + 0.5) - centre) / sigma_c)
        lower = np.where(count > 0, ndtr((np.log(np.maximum(count, 1.0) - 0.5) - centre) / sigma_c), 0.0)
        posterior = weights * (upper - lower)
        total = posterior.sum(axis=1)
        mean = (posterior * log1p_likes).sum(axis=1) / np.where(total > 0, total, 1.0)
        result[part] = np.where(total > 0, mean, (weights * log1p_likes).sum(axis=1) / weights.sum())
    return result


def synthesize(kind: str, labels: Sequence[int], class_names: Sequence[str], seed: int) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Columns drawn by generator ``kind`` for rows with these labels, and the parameters to record."""
    if kind == "seed":
        return seed_engagement(labels, class_names, seed), {}
    params = realistic_params(class_names)
    return realistic_engagement(labels, params, seed), params
