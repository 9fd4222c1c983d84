"""``instacli evaluate``: score a trained run on a dataset split or a plain class-folder tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import NonNegativeInt
from accelerate import Accelerator

from instacli.calibration import expected_calibration_error, probabilities, unfamiliarity
from instacli.errors import InstacliError, os_error_message
from instacli.eval_folders import FIGURES, METRICS, eval_folder, evaluation_title
from instacli.io import atomic_dir, write_json
from instacli.metrics import accuracy_by_group, classification_metrics, likes_metrics
from instacli.model import LoadedRun, load_run
from instacli.plots import plot_confusion, plot_likes, plot_reliability
from instacli.registry import Count
from instacli.settings import check_flag
from instacli.splits import SplitArrays, load_split_arrays
from instacli.training import resolve_mixed_precision, run_inference


class EvaluationNotSaved(InstacliError):
    """The metrics were computed but their folder could not be written; ``result`` holds them, so that
    the CLI prints them before the error instead of losing minutes of scoring."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def _align_labels(split: SplitArrays, run: LoadedRun) -> np.ndarray:
    """Map the data's label indices onto the run's class order by name (folders may sort differently)."""
    labels = split.labels.numpy()
    if run.config.task == "likes" or not (labels >= 0).any():
        return np.full(len(labels), -1)
    known = {name: i for i, name in enumerate(run.config.class_names)}
    unknown = sorted({split.class_names[i] for i in labels[labels >= 0]} - set(known))
    if unknown:
        raise InstacliError(
            f"data has categories the run never saw ({', '.join(unknown)}); the run knows {', '.join(known)}"
        )
    mapping = np.array([known.get(name, -1) for name in split.class_names] + [-1])
    return mapping[labels]


def class_median_baseline(labels: np.ndarray, likes: np.ndarray) -> float | None:
    """MAE of predicting each row's class median likes: the best a model that knows the true class can do."""
    keep = (labels >= 0) & ~np.isnan(likes)
    if not keep.any():
        return None
    predicted = np.empty(keep.sum())
    for c in np.unique(labels[keep]):
        rows = labels[keep] == c
        predicted[rows] = np.median(likes[keep][rows])
    return float(np.mean(np.abs(predicted - likes[keep])))


def oracle_metrics(split: SplitArrays) -> dict[str, float | None]:
    """Likes errors of the best possible predictor when the data came from ``--synthetic-engagement
    realistic`` (:func:`instacli_datasets.oracle_log_likes`, which knows the generator and the true
    category); None for any other data. ``oracle_likes_mae`` scores ``expm1`` of the oracle's log-space
    prediction, so it is a reference, not the lowest possible MAE on raw likes."""
    info = split.info
    keep = ~np.isnan(split.likes)
    if info is None or info.engagement != "synthetic:realistic" or not info.params or not keep.any():
        return {"oracle_log_likes_mae": None, "oracle_likes_mae": None}
    from instacli_datasets import oracle_log_likes

    columns = {name: split.dataset[name] for name in ("label", "followers", "comments")}
    predicted = oracle_log_likes(columns, info.params)[keep]
    actual = split.likes[keep]
    return {
        "oracle_log_likes_mae": float(np.mean(np.abs(predicted - np.log1p(actual)))),
        "oracle_likes_mae": float(np.mean(np.abs(np.expm1(predicted) - actual))),
    }


def predict_split(run: LoadedRun, split: SplitArrays, batch_size: int = 128, workers: int = 2) -> dict[str, np.ndarray]:
    """Calibrated probabilities, raw category logits, unfamiliarity scores and likes for every row of ``split``."""
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision("auto", run.config.encoder))
    images = split.images(run.preprocess.resize_size, workers)
    dataset = torch.utils.data.TensorDataset(images, split.features, split.targets, split.labels, split.text)
    loader = accelerator.prepare(torch.utils.data.DataLoader(dataset, batch_size=batch_size))
    model = accelerator.prepare(run.model)
    out = run_inference(model, loader, accelerator, frozen=False)
    logits, temperature = out["logits"], run.config.temperature
    probs = probabilities(logits, temperature) if logits.shape[1] else logits
    scores = unfamiliarity(logits, temperature) if logits.shape[1] else np.full(len(split), np.nan)
    likes = run.scaler.decode_target(out["likes"]) if run.config.task != "category" else np.full(len(split), np.nan)
    return {"probs": probs, "logits": logits, "unfamiliarity": scores, "likes": likes}


def evaluate(run_path: Path | str, data: Path | str, split: str = "test", batch_size: int = 128, workers: int = 2) -> dict[str, Any]:
    """Metrics of ``run_path`` on ``data``; also writes metrics.json and plots into the run's folder for
    this data and split (:func:`instacli.eval_folders.eval_folder`). ``split`` is ignored, and
    recorded as None, for a plain photo folder: it is evaluated whole."""
    from instacli_datasets.load import is_built_dataset

    run_path, data = Path(run_path), Path(data)
    batch_size, workers = check_flag("--batch-size", batch_size, Count), check_flag("--workers", workers, NonNegativeInt)
    run = load_run(run_path)
    text = (run.config.text_encoder, run.config.text_options) if run.config.text_encoder else None
    arrays = load_split_arrays(data, split, settings=None, scaler=run.scaler, task=run.config.task, text=text)
    labels = _align_labels(arrays, run)
    predicted = predict_split(run, arrays, batch_size, workers)
    split_name = split if is_built_dataset(data) else None
    result: dict[str, Any] = {"n": len(arrays), "split": split_name, "data": str(data), "run": str(run_path)}
    labelled = labels >= 0
    if labelled.any():
        result.update(classification_metrics(labels[labelled], predicted["probs"][labelled].argmax(1), run.config.class_names))
        uncalibrated = probabilities(predicted["logits"][labelled])
        result.update(ece_uncalibrated=expected_calibration_error(uncalibrated, labels[labelled]),
                      ece=expected_calibration_error(predicted["probs"][labelled], labels[labelled]))
    else:
        result.update(accuracy=None, f1_macro=None, per_class=None, confusion_matrix=None, ece_uncalibrated=None, ece=None)
    group = arrays.info.split.get("group_column") if arrays.info is not None else None
    if group and group in arrays.dataset.column_names and labelled.any():  # a dataset built with --split-by/--group-pattern
        result["group_column"] = group
        result["accuracy_by_group"] = accuracy_by_group(
            np.asarray(arrays.dataset[group], dtype=object)[labelled], labels[labelled], predicted["probs"][labelled].argmax(1))
    threshold = run.config.unfamiliar_threshold
    result["temperature"] = run.config.temperature
    result["unfamiliar_share"] = float(np.mean(predicted["unfamiliarity"] > threshold)) if threshold is not None else None
    result.update(likes_metrics(arrays.likes, predicted["likes"]))
    result["likes_mae_class_median"] = class_median_baseline(labels, arrays.likes)
    result.update(oracle_metrics(arrays))
    result["imputed_values"] = arrays.imputed  # cells of the run's numeric inputs filled with the training median
    skipped = arrays.info.skipped if arrays.info is not None else []  # files of a plain folder that could not be used
    result["skipped"] = [{"file": s.file, "reason": s.reason} for s in skipped]
    out_dir = eval_folder(run_path, data, split_name)
    title = evaluation_title(data, split_name, len(arrays))
    try:
        with atomic_dir(out_dir, overwrite=True) as tmp:  # all files of this evaluation replace the last one's at once
            if result["confusion_matrix"] is not None:
                plot_confusion(result["confusion_matrix"], run.config.class_names, tmp / FIGURES["confusion"], f"Confusion matrix\n{title}")
                plot_reliability(uncalibrated, predicted["probs"][labelled], labels[labelled], tmp / FIGURES["reliability"],
                                 f"Reliability (T = {run.config.temperature:.2f})\n{title}")
            if result["likes_mae"] is not None:
                keep = ~np.isnan(arrays.likes)
                plot_likes(arrays.likes[keep], predicted["likes"][keep], tmp / FIGURES["likes"], f"Predicted vs actual likes\n{title}")
            write_json(tmp / METRICS, result)
    except (OSError, InstacliError) as exc:  # a read-only run, a full disk, another evaluate writing the same folder
        reason = os_error_message(exc) if isinstance(exc, OSError) else str(exc)
        raise EvaluationNotSaved(f"the metrics above were not saved to {out_dir}: {reason}", {**result, "outputs": None}) from None
    result["outputs"] = str(out_dir)
    return result
