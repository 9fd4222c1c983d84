"""Deterministic, stratified train/validation/test assignment.

Each class is split on its own (so every split keeps the class balance), from its photos sorted by
file name and shuffled with a generator seeded by ``(seed, class index)``: the same files and seed
always give the same split, and adding photos to one class does not reshuffle the others. Split
sizes follow the largest-remainder rule, so the totals match ``round(n * fraction)`` even when
every class is small, and a class never loses its last training photo.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "validation", "test")


def _quotas(sizes: list[int], fraction: float, caps: list[int]) -> list[int]:
    """Per-class counts summing to about ``round(sum(sizes) * fraction)``, each within its cap."""
    exact = [n * fraction for n in sizes]
    quotas = [min(int(e), cap) for e, cap in zip(exact, caps)]
    wanted = round(sum(sizes) * fraction)
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    for i in by_remainder:
        if sum(quotas) >= wanted:
            break
        if quotas[i] < caps[i]:
            quotas[i] += 1
    return quotas


def stratified_split(
    labels: Sequence[int], keys: Sequence[str], *, val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """The split name of each row; rows are grouped by ``labels`` and ordered by ``keys``."""
    classes = sorted(set(labels))
    members = {c: sorted((i for i, label in enumerate(labels) if label == c), key=lambda i: keys[i]) for c in classes}
    sizes = [len(members[c]) for c in classes]
    n_val = _quotas(sizes, val_fraction, [max(n - 1, 0) for n in sizes])
    n_test = _quotas(sizes, test_fraction, [max(n - 1 - v, 0) for n, v in zip(sizes, n_val)])
    assignment = ["train"] * len(labels)
    for c, v, t in zip(classes, n_val, n_test):
        order = np.random.default_rng([seed, c]).permutation(len(members[c]))
        shuffled = [members[c][j] for j in order]
        for i in shuffled[:v]:
            assignment[i] = "validation"
        for i in shuffled[v:v + t]:
            assignment[i] = "test"
    return assignment
