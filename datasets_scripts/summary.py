"""Numbers that describe a built dataset (``instacli data info``): class balance and engagement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instacli_datasets.build import NUMERIC_INPUTS, UNLABELED, label_name
from instacli_datasets.load import DataInfo, load_dataset_dict


@dataclass
class ColumnStats:
    """One engagement column within one class, over all splits; ``None`` stats when all missing."""

    column: str
    class_name: str
    count: int
    missing: int
    min: float | None
    median: float | None
    mean: float | None
    max: float | None


@dataclass
class Summary:
    info: DataInfo
    class_counts: dict[str, dict[str, int]]
    stats: list[ColumnStats]


def summarize(path: Path) -> Summary:
    """Per-split class counts and per-class statistics of likes and the numeric input columns."""
    dataset_dict, info = load_dataset_dict(Path(path))
    names = info.class_names
    columns = [c for c in ("likes", *NUMERIC_INPUTS) if all(c in ds.column_names for ds in dataset_dict.values())]
    labels: list[int] = []
    values: dict[str, list] = {c: [] for c in columns}
    class_counts = {}
    for split, ds in dataset_dict.items():
        table = ds.select_columns(["label", *columns]).to_dict()
        class_counts[split] = {n: 0 for n in names or [UNLABELED]}
        for label in table["label"]:
            class_counts[split][label_name(label, names)] += 1
        labels.extend(table["label"])
        for c in columns:
            values[c].extend(table[c])
    stats = []
    label_array = np.asarray(labels)
    categories = list(enumerate(names)) or [(-1, UNLABELED)]
    for c in columns:
        column = np.asarray([np.nan if v is None else v for v in values[c]], dtype=float)
        for i, name in categories:
            picked = column[label_array == i]
            present = picked[~np.isnan(picked)]
            numbers = (present.min(), np.median(present), present.mean(), present.max()) if present.size else (None,) * 4
            stats.append(ColumnStats(c, name, int(picked.size), int(picked.size - present.size),
                                     *(None if x is None else float(x) for x in numbers)))
    return Summary(info=info, class_counts=class_counts, stats=stats)
