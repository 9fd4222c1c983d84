"""Deterministic, stratified train/validation/test assignment.

The unit of splitting is a group: one photo, or all photos of one post (a carousel), which must
never be spread over train and test. Each class is split on its own (so every split keeps the class
balance), from its groups sorted by key and shuffled with a generator seeded by
``(seed, class position)``: the same files and seed always give the same split, and adding photos to
one class does not reshuffle the others. Split sizes follow the largest-remainder rule, so the
totals match ``round(n * fraction)`` even when every class is small, and a class never loses its
last training group. Unlabeled data (every label -1) is one class: a plain random split.
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
    labels: Sequence[int], groups: Sequence[str], *, val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """The split name of each row; rows sharing a ``groups`` key share a split (a group's class is
    the label of its first row)."""
    label_of: dict[str, int] = {}
    for label, group in zip(labels, groups):
        label_of.setdefault(group, label)
    classes = sorted(set(label_of.values()))
    members = {c: sorted(g for g, label in label_of.items() if label == c) for c in classes}
    sizes = [len(members[c]) for c in classes]
    n_val = _quotas(sizes, val_fraction, [max(n - 1, 0) for n in sizes])
    n_test = _quotas(sizes, test_fraction, [max(n - 1 - v, 0) for n, v in zip(sizes, n_val)])
    split_of: dict[str, str] = {}
    for position, (c, v, t) in enumerate(zip(classes, n_val, n_test)):
        order = np.random.default_rng([seed, position]).permutation(sizes[position])
        for rank, j in enumerate(order):
            split_of[members[c][j]] = "validation" if rank < v else "test" if rank < v + t else "train"
    return [split_of[g] for g in groups]
