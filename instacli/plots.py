"""Figures written next to runs and reports (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig: Any, path: Path) -> Path:
    """Save atomically (temp file + rename, folder created) and free the figure; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Training/validation loss and validation accuracy per epoch."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss (cross-entropy + w·likes)")
    ax_loss.legend()
    if any("val_accuracy" in r for r in history):
        ax_acc.plot(epochs, [r.get("val_accuracy", np.nan) for r in history], color="tab:green")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str = "Confusion matrix") -> None:
    """Counts with true classes as rows and predictions as columns."""
    m = np.asarray(matrix)
    size = 1.2 + 0.6 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_figure(fig, path)


def plot_likes(actual: np.ndarray, predicted: np.ndarray, path: Path, title: str = "Predicted vs actual likes") -> None:
    """Scatter on log axes with the identity line."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    a, p = np.asarray(actual) + 1, np.asarray(predicted) + 1
    ax.scatter(a, p, s=6, alpha=0.4)
    lo, hi = min(a.min(), p.min()), max(a.max(), p.max())
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="actual likes + 1", ylabel="predicted likes + 1", title=title)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_reliability(uncalibrated: np.ndarray, calibrated: np.ndarray, labels: np.ndarray, path: Path, title: str = "Reliability") -> None:
    """Reliability diagram: accuracy against top-label confidence per bin, before and after temperature
    scaling; a calibrated model lies on the diagonal."""
    from instacli.calibration import expected_calibration_error, reliability_bins

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="gray", lw=1)
    for probs, name, marker in ((uncalibrated, "uncalibrated", "s"), (calibrated, "calibrated", "o")):
        confidence, accuracy, count = reliability_bins(probs, labels)
        ece = expected_calibration_error(probs, labels)
        ax.plot(confidence[count > 0], accuracy[count > 0], marker=marker, label=f"{name} (ECE {ece:.3f})")
    ax.set(xlabel="confidence (top probability)", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
