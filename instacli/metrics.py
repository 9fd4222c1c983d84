"""Classification and likes metrics, computed the same way everywhere (evaluate, compare, benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix (rows = true)."""
    idx = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=idx, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_macro": float(np.mean(f1)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=idx).tolist(),
    }


def accuracy_by_group(groups: Sequence[str], labels: np.ndarray, predicted: np.ndarray) -> dict[str, dict[str, float]]:
    """``{group: {"n", "accuracy"}}``: on a held-out split, how each unseen source (account…) fares."""
    keys = np.asarray(groups, dtype=object)
    return {str(g): {"n": int((keys == g).sum()), "accuracy": float(np.mean(labels[keys == g] == predicted[keys == g]))}
            for g in sorted(set(groups))}


def likes_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """MAE, RMSE, R² and Spearman on raw likes, and MAE on log1p(likes); rows without actual likes ignored."""
    keep = ~np.isnan(actual)
    a, p = actual[keep], predicted[keep]
    if a.size == 0:
        return {k: None for k in ("likes_mae", "likes_rmse", "likes_r2", "likes_spearman", "log_likes_mae")}
    err = p - a
    variance = float(np.sum((a - a.mean()) ** 2))
    return {
        "likes_mae": float(np.mean(np.abs(err))),
        "likes_rmse": float(np.sqrt(np.mean(err**2))),
        "likes_r2": float(1 - np.sum(err**2) / variance) if variance > 0 else None,
        "likes_spearman": float(spearmanr(a, p).statistic) if a.size > 2 and np.ptp(p) > 0 else None,
        "log_likes_mae": float(np.mean(np.abs(np.log1p(p) - np.log1p(a)))),
    }
