"""What do test-time augmentation and ensembles gain on a split? (issue 10 §3)

Not a test: it evaluates trained runs on a split of a built dataset (e.g. ``holdout`` of a shift
benchmark fold, photos of sources never seen in training) exactly as ``instacli evaluate`` does,
each run with every test-time augmentation of :data:`instacli.augment.TTA_CHOICES` and then all the
runs together as one ensemble (plain and with the CLI's ``--tta``), and prints accuracy, macro F1,
ECE, the share flagged unfamiliar and the wall time of each as a markdown table. The evaluation
folders go under ``--out`` (the runs are only read).

    INSTACLI_CACHE=/tmp/h-tta/cache python benchmarks/tta.py DATA --split holdout --out /tmp/h-tta/bench RUN1 RUN2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from instacli.augment import TTA_CHOICES, TTA_DEFAULT
from instacli.evaluation import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--split", default="holdout")
    p.add_argument("--out", type=Path, required=True, help="folder for the evaluation folders (must not exist)")
    p.add_argument("--tta", nargs="+", default=list(TTA_CHOICES), choices=TTA_CHOICES, help="augmentations to measure per run")
    args = p.parse_args()
    cases = [([run], tta) for run in args.runs for tta in args.tta]
    if len(args.runs) > 1:
        cases += [(args.runs, "none"), (args.runs, TTA_DEFAULT)]
    print("| runs | tta | accuracy | macro F1 | ECE | unfamiliar | seconds |", flush=True)
    print("|---|---|---|---|---|---|---|")
    for runs, tta in cases:
        name = "+".join(run.name for run in runs)
        started = time.perf_counter()
        result = evaluate(runs, args.data, split=args.split, tta=tta, out=args.out / f"{name}-{tta}")
        unfamiliar = "-" if result["unfamiliar_share"] is None else f"{result['unfamiliar_share']:.1%}"
        print(f"| {name} | {tta} | {result['accuracy']:.1%} | {result['f1_macro']:.3f} | {result['ece']:.3f} | {unfamiliar} "
              f"| {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
