"""``instacli evaluate``: score a trained run on a dataset split or a plain class-folder tree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import NonNegativeInt

from instacli import interrupts
from instacli.calibration import expected_calibration_error
from instacli.ensemble import Member, check_compatible, combine, score_views
from instacli.errors import InstacliError, os_error_message
from instacli.run_folder import FIGURES, METRICS, RunFolder, evaluation_title
from instacli.io import atomic_dir, check_writable_target, write_json
from instacli.launch import precision_autocast, resolve_mixed_precision
from instacli.metrics import accuracy_by_group, classification_metrics, likes_metrics
from instacli.model import LoadedRun, load_run
from instacli.plots import plot_confusion, plot_likes, plot_reliability
from instacli.settings import DECODE_WORKERS, EVALUATE_BATCH_SIZE, ScoringBatch, check_flag
from instacli.split_arrays import SplitArrays, load_split_arrays


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


def reference_metrics(data: Path, split: str | None, arrays: SplitArrays) -> dict[str, float | None]:
    """What the likes error is measured against, from the same functions as compare's baseline rows:
    ``likes_mae_class_median`` (each post gets the training median likes of its true category,
    :func:`instacli.baselines.class_median_likes`) and, on ``--synthetic-engagement realistic`` data,
    the generator's own guess (``oracle_*``, :func:`instacli.baselines.generator_log_likes`; its
    ``oracle_likes_mae`` scores ``expm1`` of a log-space guess, a reference, not the lowest possible
    MAE on raw likes). None where they do not apply (a plain photo folder has no training split).
    ``arrays`` is the evaluated split, already read: only the training split's columns are read here."""
    out: dict[str, float | None] = {"likes_mae_class_median": None, "oracle_log_likes_mae": None, "oracle_likes_mae": None}
    likes = arrays.likes
    keep = ~np.isnan(likes)
    if split is None or not keep.any():
        return out
    from instacli.baselines import SplitColumns, class_median_likes, generator_log_likes

    evaluated = SplitColumns.from_dataset(arrays.dataset, arrays.info)
    medians = class_median_likes(SplitColumns.load(data, "train"), evaluated)
    labelled = keep & (evaluated.labels >= 0)
    if medians is not None and labelled.any():
        out["likes_mae_class_median"] = float(np.mean(np.abs(medians[0][labelled] - likes[labelled])))
    oracle = generator_log_likes(evaluated)
    if oracle is not None:
        out["oracle_log_likes_mae"] = float(np.mean(np.abs(oracle[keep] - np.log1p(likes[keep]))))
        out["oracle_likes_mae"] = float(np.mean(np.abs(np.expm1(oracle[keep]) - likes[keep])))
    return out


def split_members(run: LoadedRun, split: SplitArrays, batch_size: int = EVALUATE_BATCH_SIZE, workers: int = DECODE_WORKERS, tta: str = "none") -> list[Member]:
    """One run's answers for every row of ``split``, one per ``tta`` view (:func:`instacli.ensemble.score_views`).

    The encoder always sees pixels here: a frozen run's cached training embeddings are of the eval view
    alone, so they would answer neither a mirrored view nor another split."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_mixed_precision("auto", run.config.encoder)
    images = split.images(run.preprocess.resize_size, workers)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, split.features, split.text), batch_size=batch_size)
    run.model.eval().to(device)
    views: list[list[Member]] = []
    for pixels, features, text in loader:
        interrupts.check()  # a Ctrl-C that a finalizer swallowed stops here
        with torch.inference_mode(), precision_autocast(device, precision):
            views.append(score_views(run, pixels.to(device), features.to(device), text.to(device), tta))
    return [{key: np.concatenate([batch[v][key] for batch in views]) for key in views[0][v]} for v in range(len(views[0]))]


def predict_split(run: LoadedRun, split: SplitArrays, batch_size: int = EVALUATE_BATCH_SIZE, workers: int = DECODE_WORKERS, tta: str = "none") -> dict[str, np.ndarray | None]:
    """Calibrated and uncalibrated probabilities, unfamiliarity scores and flags, and likes for every
    row of ``split`` (:func:`instacli.ensemble.combine`), averaged over the ``tta`` views."""
    return combine(split_members(run, split, batch_size, workers, tta), [run])


def evaluate(
    run_path: Path | str | Sequence[Path | str], data: Path | str, split: str = "test", batch_size: int = EVALUATE_BATCH_SIZE, workers: int = DECODE_WORKERS,
    tta: str = "none", out: Path | str | None = None, overwrite: bool = False,
) -> dict[str, Any]:
    """Metrics of ``run_path`` on ``data``; also writes metrics.json and plots into the run's folder for
    this data and split (:meth:`instacli.run_folder.RunFolder.evaluation`), or into ``out`` when given (then
    never over an existing folder unless ``overwrite``). ``split`` is ignored, and recorded as None,
    for a plain photo folder: it is evaluated whole.

    ``run_path`` may list several runs, evaluated as one ensemble (:mod:`instacli.ensemble`); its
    evaluation belongs to no single run, so it needs ``out``. ``tta`` averages test-time views."""
    from instacli_datasets.load import is_built_dataset

    run_paths = [Path(run_path)] if isinstance(run_path, (str, Path)) else [Path(p) for p in run_path]
    data = Path(data)
    batch_size, workers = check_flag("--batch-size", batch_size, ScoringBatch), check_flag("--workers", workers, NonNegativeInt)
    if out is not None:
        check_writable_target(Path(out), overwrite, "evaluation folder", METRICS)
    elif len(run_paths) > 1:
        raise InstacliError("an ensemble's evaluation belongs to none of its runs; pass --out FOLDER for its metrics and plots")
    runs = [load_run(path) for path in run_paths]
    check_compatible(runs)
    run = runs[0]
    splits = [load_split_arrays(data, split, settings=None, scaler=r.scaler, task=r.config.task,
                                text=(r.config.text_encoder, r.config.text_options) if r.config.text_encoder else None) for r in runs]
    arrays = splits[0]  # labels, likes and groups: the same rows for every run, only the scaled inputs differ
    labels = _align_labels(arrays, run)
    predicted = combine([m for r, a in zip(runs, splits) for m in split_members(r, a, batch_size, workers, tta)], runs)
    split_name = split if is_built_dataset(data) else None
    result: dict[str, Any] = {"n": len(arrays), "split": split_name, "data": str(data),
                              "run": str(run_paths[0]) if len(runs) == 1 else [str(p) for p in run_paths], "tta": tta}
    labelled = labels >= 0
    if labelled.any():
        result.update(classification_metrics(labels[labelled], predicted["probs"][labelled].argmax(1), run.config.class_names))
        result.update(ece_uncalibrated=expected_calibration_error(predicted["uncalibrated"][labelled], labels[labelled]),
                      ece=expected_calibration_error(predicted["probs"][labelled], labels[labelled]))
    else:
        result.update(accuracy=None, f1_macro=None, per_class=None, confusion_matrix=None, ece_uncalibrated=None, ece=None)
    group = arrays.info.split.get("group_column") if arrays.info is not None else None
    if group and group in arrays.dataset.column_names and labelled.any():  # a dataset built with --split-by/--group-pattern
        result["group_column"] = group
        result["accuracy_by_group"] = accuracy_by_group(
            np.asarray(arrays.dataset[group], dtype=object)[labelled], labels[labelled], predicted["probs"][labelled].argmax(1))
    temperatures = [r.config.temperature for r in runs]
    result["temperature"] = temperatures[0] if len(runs) == 1 else temperatures
    result["unfamiliar_share"] = float(np.mean(predicted["unfamiliar"])) if predicted["unfamiliar"] is not None else None
    result.update(likes_metrics(arrays.likes, predicted["likes"]))
    result.update(reference_metrics(data, split_name, arrays))
    result["imputed_values"] = max(a.imputed for a in splits)  # cells of a run's numeric inputs filled with the training median
    skipped = arrays.info.skipped if arrays.info is not None else []  # files of a plain folder that could not be used
    result["skipped"] = [{"file": s.file, "reason": s.reason} for s in skipped]
    out_dir = Path(out) if out is not None else RunFolder(run_paths[0]).evaluation(data, split_name, tta)
    title = evaluation_title(data, split_name, len(arrays))
    calibrated_by = f"T = {temperatures[0]:.2f}" if len(runs) == 1 else f"ensemble of {len(runs)} runs"
    try:
        with atomic_dir(out_dir, overwrite=True, what="evaluation folder", marker=METRICS) as tmp:  # all files of this evaluation replace the last one's at once
            if result["confusion_matrix"] is not None:
                plot_confusion(result["confusion_matrix"], run.config.class_names, tmp / FIGURES["confusion"], f"Confusion matrix\n{title}")
                plot_reliability(predicted["uncalibrated"][labelled], predicted["probs"][labelled], labels[labelled], tmp / FIGURES["reliability"],
                                 f"Reliability ({calibrated_by})\n{title}")
            if result["likes_mae"] is not None:
                keep = ~np.isnan(arrays.likes)
                plot_likes(arrays.likes[keep], predicted["likes"][keep], tmp / FIGURES["likes"], f"Predicted vs actual likes\n{title}")
            write_json(tmp / METRICS, result)
    except (OSError, InstacliError) as exc:  # a read-only run, a full disk, another evaluate writing the same folder
        reason = os_error_message(exc) if isinstance(exc, OSError) else str(exc)
        raise EvaluationNotSaved(f"the metrics above were not saved to {out_dir}: {reason}", {**result, "outputs": None}) from None
    result["outputs"] = str(out_dir)
    return result
