"""Deterministic train/validation/test assignment: stratified (default), by group, or by time.

The unit of splitting is a group: one photo, or all photos of one post (a carousel), which must
never be spread over train and test. Each class is split on its own (so every split keeps the class
balance), from its groups sorted by key and shuffled with a generator seeded by
``(seed, class position)``: the same files and seed always give the same split, and adding photos to
one class does not reshuffle the others. Split sizes follow the largest-remainder rule, so the
totals match ``round(n * fraction)`` even when every class is small, and a class never loses its
last training group. Unlabeled data (every label -1) is one class: a plain random split.

The other two answer "how well does it do on data unlike the training data": :func:`group_split`
keeps every photo of one group value (a source, an account) in one split, so the test split holds
only values training never saw; :func:`time_split` puts the newest posts in test, as a model used
on next month's posts meets them. Photos held out by value (``--holdout``) go to the extra split
:data:`HOLDOUT` before any of these runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "validation", "test")
#: The extra split of the rows whose group value ``data build --holdout`` lists.
HOLDOUT = "holdout"


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


def _targets(n: int, val_fraction: float, test_fraction: float) -> dict[str, float]:
    return {"train": n * (1 - val_fraction - test_fraction), "validation": n * val_fraction, "test": n * test_fraction}


def needed_splits(val_fraction: float, test_fraction: float) -> list[str]:
    """The splits that must receive rows: train, and validation/test when their fraction is > 0."""
    return [s for s, target in _targets(1, val_fraction, test_fraction).items() if target > 0]


def group_split(groups: Sequence[str], *, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """The split name of each row, whole groups at a time; needs ``len(set(groups))`` ≥ the number of
    :func:`needed_splits`.

    Groups are taken in a seeded shuffle of their sorted keys and each goes to the split that lacks
    the most rows for its fraction, so the splits come out as close to the fractions (in rows) as
    whole groups allow; when only as many groups are left as needed splits are still empty, those
    splits get them, so no needed split is ever empty. Classes are not stratified: a group is the unit.
    """
    sizes = Counter(groups)
    keys = sorted(sizes)
    targets = _targets(len(groups), val_fraction, test_fraction)
    needed = needed_splits(val_fraction, test_fraction)
    filled = dict.fromkeys(SPLITS, 0)
    split_of: dict[str, str] = {}
    for done, j in enumerate(np.random.default_rng(seed).permutation(len(keys))):
        empty = [s for s in needed if not filled[s]]
        candidates = empty if len(keys) - done <= len(empty) else needed
        split = max(candidates, key=lambda s: targets[s] - filled[s])
        split_of[keys[j]] = split
        filled[split] += sizes[keys[j]]
    return [split_of[g] for g in groups]


def time_split(times: Sequence[int], groups: Sequence[str], *, val_fraction: float, test_fraction: float) -> list[str]:
    """The split name of each row by time: the newest ``round(n * test_fraction)`` rows (whole groups,
    newest first by their latest time) are test, the next newest validation, the rest train."""
    latest: dict[str, int] = {}
    for time, group in zip(times, groups):
        latest[group] = max(time, latest.get(group, time))
    sizes = Counter(groups)
    quota = {"test": round(len(groups) * test_fraction), "validation": round(len(groups) * val_fraction)}
    filled = dict.fromkeys(quota, 0)
    split_of: dict[str, str] = {}
    for group in sorted(latest, key=lambda g: (-latest[g], g)):
        split = next((s for s in quota if filled[s] < quota[s]), "train")
        split_of[group] = split
        if split in filled:
            filled[split] += sizes[group]
    return [split_of[g] for g in groups]
