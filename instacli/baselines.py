"""Baselines every comparison is measured against: no learning at all, or no photo at all.

* ``majority`` — always the most frequent category of the training split, and the training median
  of likes for every post: what a model must beat to have learnt anything.
* ``class-median`` — the training median likes of each post's *true* category. It reads the label,
  so it is an oracle for the likes task, not a competitor: with likes that depend on the category
  only (the ``seed`` synthetic engagement) it is the best MAE any model can reach.
* ``generator`` — only on ``synthetic:realistic`` data: the generator's own best prediction of
  log1p(likes) from category, followers and comments (:func:`instacli_datasets.oracle_log_likes`).
  Another oracle: the floor of the log-likes error, shown for reference.
* ``ridge`` / ``gbrt`` — scikit-learn regressors on ``log1p`` of the numeric engagement columns
  (comments, shares, followers: whichever the data has), target ``log1p(likes)``, without the
  photo. Missing values are imputed with the training median, as the networks' scaler does.

Every baseline is fitted on the training split and scored on the evaluation split with the same
metric functions as the trained models (:mod:`instacli.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instacli.errors import InstacliError
from instacli.features import NUMERIC_COLUMNS, as_float
from instacli.metrics import classification_metrics, likes_metrics
from instacli.results import ResultRow, baseline_row

#: Regressors on the numeric engagement columns only, in table order.
NUMERIC_BASELINES = ("ridge", "gbrt")
#: The numbers-only ridge has three standardized inputs and needs little shrinkage; the registered
#: ``ridge`` regressor (α = 10, ``plugins/regressors/sklearn_regressors.py``) regularizes an image
#: embedding of hundreds of dimensions beside them.
NUMBERS_RIDGE_ALPHA = 1.0

DESCRIPTIONS = {
    "majority": "most frequent training category; training median likes for every post",
    "class-median": "training median likes of the post's true category (reads the label: an oracle for likes, no classifier)",
    "generator": "the synthetic engagement generator's best prediction from category, followers and comments (an oracle: the floor of log-likes MAE)",
    "ridge": f"ridge regression (α = {NUMBERS_RIDGE_ALPHA:g}) on log1p(comments, shares, followers) → log1p(likes), no photo",
    "gbrt": "gradient-boosted trees (scikit-learn HistGradientBoostingRegressor) on the same numbers, no photo",
}


@dataclass
class SplitColumns:
    """The non-image columns of one split: labels (-1 = none), likes (NaN = none), numeric inputs."""

    labels: np.ndarray
    likes: np.ndarray
    numeric: dict[str, np.ndarray]
    class_names: list[str]
    engagement: str | None = None
    params: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def load(cls, data: Path, split: str) -> SplitColumns:
        """Read ``split`` of a built dataset without decoding a single image."""
        from instacli_datasets import load_data

        return cls.from_dataset(*load_data(Path(data), split=split))

    @classmethod
    def from_dataset(cls, ds: Any, info: Any) -> SplitColumns:
        """The columns of a split already loaded (``load_data``'s dataset and info)."""
        n = len(ds)
        labels = np.asarray(ds["label"], dtype=np.int64) if "label" in ds.column_names else np.full(n, -1)
        likes = as_float(ds["likes"]) if "likes" in ds.column_names else np.full(n, np.nan)
        numeric = {c: as_float(ds[c]) for c in NUMERIC_COLUMNS if c in ds.column_names}
        return cls(labels=labels, likes=likes, numeric=numeric, class_names=list(info.class_names),
                   engagement=info.engagement, params=dict(getattr(info, "params", None) or {}))


def _row(key: str, name: str, metrics: dict[str, Any], **extra: Any) -> ResultRow:
    return baseline_row(key, name, DESCRIPTIONS[key], metrics, **extra)


def _failed(key: str, name: str, error: str) -> ResultRow:
    return baseline_row(key, name, DESCRIPTIONS[key], {}, error=error)


def _empty_classification() -> dict[str, Any]:
    return {"accuracy": None, "f1_macro": None, "per_class": None, "confusion_matrix": None}


def _likes_result(test: SplitColumns, predicted: np.ndarray) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Likes metrics, and the (actual, predicted) pairs of rows with likes, for the scatter plot."""
    keep = ~np.isnan(test.likes)
    pairs = {"actual": test.likes[keep].tolist(), "predicted": predicted[keep].tolist()}
    return likes_metrics(test.likes, predicted), pairs


def majority(train: SplitColumns, test: SplitColumns) -> ResultRow:
    """Most frequent training category and the training median likes, for every test row."""
    metrics: dict[str, Any] = _empty_classification()
    train_labelled, test_labelled = train.labels >= 0, test.labels >= 0
    if train_labelled.any() and test_labelled.any():
        top = int(np.bincount(train.labels[train_labelled], minlength=len(train.class_names)).argmax())
        predicted = np.full(int(test_labelled.sum()), top)
        metrics.update(classification_metrics(test.labels[test_labelled], predicted, train.class_names))
        metrics["predicted_class"] = train.class_names[top]
    pairs = None
    observed = train.likes[~np.isnan(train.likes)]
    if observed.size and (~np.isnan(test.likes)).any():
        likes, pairs = _likes_result(test, np.full(len(test), float(np.median(observed))))
        metrics.update(likes)
    if metrics["accuracy"] is None and pairs is None:
        return _failed("majority", "majority class", "the data has neither labels nor likes in both train and test")
    return _row("majority", "majority class", metrics, likes_predictions=pairs)


def class_median_likes(train: SplitColumns, test: SplitColumns) -> tuple[np.ndarray, dict[str, float]] | None:
    """The one meaning of "class median" (the ``class-median`` row of compare, ``likes_mae_class_median``
    of evaluate): each test row gets the *training* median likes of its true category, by name (the
    overall training median for a category without likes in train, and for rows without a label).
    Returns the predictions and the medians; None without labels and likes in train."""
    train_keep = (train.labels >= 0) & ~np.isnan(train.likes)
    if not train_keep.any():
        return None
    fallback = float(np.median(train.likes[~np.isnan(train.likes)]))
    medians = {train.class_names[c]: float(np.median(train.likes[train_keep & (train.labels == c)])) for c in np.unique(train.labels[train_keep])}
    names = [test.class_names[c] if c >= 0 else None for c in test.labels]
    return np.array([medians.get(name, fallback) for name in names]), medians


def class_median(train: SplitColumns, test: SplitColumns) -> ResultRow:
    """Each test row gets the training median likes of its true class (:func:`class_median_likes`)."""
    name = "per-class median likes"
    found = class_median_likes(train, test) if ((test.labels >= 0) & ~np.isnan(test.likes)).any() else None
    if found is None:
        return _failed("class-median", name, "needs labels and likes in both train and test")
    predicted, medians = found
    likes, pairs = _likes_result(test, predicted)
    metrics = {**_empty_classification(), **likes, "class_medians": medians}
    return _row("class-median", name, metrics, likes_predictions=pairs, oracle=True)


def generator_log_likes(split: SplitColumns) -> np.ndarray | None:
    """The synthetic engagement generator's posterior mean of log1p(likes) for every row of ``split``
    (it knows the true category): on ``synthetic:realistic`` data only, else None. The ``generator``
    row of compare and the ``oracle_*`` figures of evaluate both come from here."""
    if split.engagement != "synthetic:realistic" or not split.params or not (~np.isnan(split.likes)).any():
        return None
    from instacli_datasets import oracle_log_likes

    columns = {"label": split.labels, "followers": split.numeric.get("followers"), "comments": split.numeric.get("comments")}
    if any(v is None for v in columns.values()):
        return None
    return oracle_log_likes(columns, split.params)


def generator_oracle(test: SplitColumns) -> ResultRow | None:
    """On ``synthetic:realistic`` data, the generator's own guess as a baseline row (:func:`generator_log_likes`); else None."""
    log_likes = generator_log_likes(test)
    if log_likes is None:
        return None
    likes, pairs = _likes_result(test, np.clip(np.expm1(log_likes), 0.0, None))
    return _row("generator", "likes generator's own guess", {**_empty_classification(), **likes}, likes_predictions=pairs, oracle=True)


def numeric_matrix(split: SplitColumns, columns: list[str], medians: list[float]) -> np.ndarray:
    """``log1p`` of the numeric columns with missing values set to the training medians."""
    out = np.empty((len(split), len(columns)))
    for j, (name, median) in enumerate(zip(columns, medians)):
        raw = split.numeric.get(name, np.full(len(split), np.nan))
        out[:, j] = np.log1p(np.where(np.isnan(raw), median, raw))
    return out


def make_regressor(kind: str, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "ridge":
        return make_pipeline(StandardScaler(), Ridge(alpha=NUMBERS_RIDGE_ALPHA))
    if kind == "gbrt":
        return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=seed)
    raise InstacliError(f"unknown numeric baseline '{kind}'; known: {', '.join(NUMERIC_BASELINES)}")


def numeric_only(kind: str, train: SplitColumns, test: SplitColumns, seed: int = 0) -> ResultRow:
    """``kind`` (ridge or gbrt) fitted on log1p(numeric columns) → log1p(likes) of train, scored on test."""
    name = f"numbers only ({kind})"
    columns = [c for c, v in train.numeric.items() if not np.isnan(v).all()]
    train_keep = ~np.isnan(train.likes)
    if not columns:
        return _failed(kind, name, "the data has no comments, shares or followers to regress on")
    if train_keep.sum() < 2 or not (~np.isnan(test.likes)).any():
        return _failed(kind, name, "needs likes in both train and test")
    medians = [float(np.nanmedian(train.numeric[c])) for c in columns]
    model = make_regressor(kind, seed)
    model.fit(numeric_matrix(train, columns, medians)[train_keep], np.log1p(train.likes[train_keep]))
    predicted = np.clip(np.expm1(model.predict(numeric_matrix(test, columns, medians))), 0.0, None)
    likes, pairs = _likes_result(test, predicted)
    return _row(kind, name, {**_empty_classification(), **likes}, likes_predictions=pairs, features=columns)


def all_baselines(data: Path, split: str = "test", seed: int = 0) -> list[ResultRow]:
    """Every baseline row, fitted on ``train`` of ``data`` and scored on ``split``."""
    train, test = SplitColumns.load(data, "train"), SplitColumns.load(data, split)
    rows = [majority(train, test), class_median(train, test)]
    rows += [numeric_only(kind, train, test, seed) for kind in NUMERIC_BASELINES]
    oracle = generator_oracle(test)
    if oracle is not None:
        rows.insert(2, oracle)
    for row in rows:
        row["metrics"]["n"] = len(test)
    return rows
