"""Made-up engagement for photos that have none, so the likes model can be exercised end to end.

``seed`` is the original design's generator: per photo, independent uniform integers
``comments ~ U{1..10^(e-2)}``, ``shares ~ U{1..10^(e-1)}``, ``likes ~ U{1..10^e}`` where the
likes exponent ``e`` depends only on the category: ``landscape`` 6 and ``animal`` 5 (the original
table: landscape comments ≤ 10^4, shares ≤ 10^5, likes ≤ 10^6; animal one decade lower). Any other
category gets ``e = 4 + (its index among the unknown names, sorted) mod 3``, so a dataset of
arbitrary categories still has categories that differ by decades. Values are drawn with
``numpy.random.default_rng(seed)`` over the photos in file-name order, comments then shares then
likes for all photos at once: the same photos and seed give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

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
