"""How well does the ``unfamiliar`` flag point at wrong predictions? (issue 10 §4)

Not a test: it scores a trained run on a split of a built dataset (e.g. ``holdout``, photos of
sources never seen in training) exactly as ``predict`` does (calibrated probabilities, the energy
score and the run's threshold), and prints, for the wrong and the right predictions, the share
flagged unfamiliar, the AUROC of the unfamiliarity score (and, for comparison, of one minus the
calibrated confidence) at telling wrong from right, and the ECE before and after calibration.

    INSTACLI_CACHE=/tmp/calib-cache python benchmarks/distrust.py RUN DATA --split holdout
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sklearn.metrics import roc_auc_score

from instacli.calibration import expected_calibration_error
from instacli.evaluation import _align_labels, predict_split
from instacli.model import load_run
from instacli.split_arrays import load_split_arrays


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--split", default="holdout")
    args = p.parse_args()
    run = load_run(args.run)
    arrays = load_split_arrays(args.data, args.split, settings=None, scaler=run.scaler, task=run.config.task)
    labels = _align_labels(arrays, run)
    predicted = predict_split(run, arrays)
    keep = labels >= 0
    probs, scores, labels = predicted["probs"][keep], predicted["unfamiliarity"][keep], labels[keep]
    wrong = probs.argmax(1) != labels
    flagged = scores > run.config.unfamiliar_threshold
    both = 0 < wrong.sum() < len(wrong)
    figures = {
        "split": args.split, "n": int(len(labels)), "accuracy": float(1 - wrong.mean()), "wrong": int(wrong.sum()),
        "temperature": run.config.temperature, "threshold": run.config.unfamiliar_threshold,
        "flagged_share": float(flagged.mean()),
        "wrong_flagged_share": float(flagged[wrong].mean()) if wrong.any() else None,
        "right_flagged_share": float(flagged[~wrong].mean()) if (~wrong).any() else None,
        "auroc_unfamiliarity": float(roc_auc_score(wrong, scores)) if both else None,
        "auroc_one_minus_confidence": float(roc_auc_score(wrong, 1 - probs.max(1))) if both else None,
        "ece_uncalibrated": expected_calibration_error(predicted["uncalibrated"][keep], labels),
        "ece": expected_calibration_error(probs, labels),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
