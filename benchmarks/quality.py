"""Quality benchmark: train an encoder on ../shared/data/posts-dev with the CLI, evaluate, print the figures.

Not a test: it takes minutes. It runs the real commands a user would (`instacli data build`,
`instacli train`, `instacli evaluate --json`) and prints test accuracy, wall time and the likes MAE
next to the best a model that knows the true class can do (the per-class median).

    python benchmarks/quality.py vit-scratch              # CLI defaults (target: ≥ 88 % in ≤ 15 min)
    python benchmarks/quality.py efficientnet-lite0       # CLI defaults: frozen probe + semantic prior (target: ≥ 97 % in ≤ 10 min)
    python benchmarks/quality.py inception-v3 hf-vit      # from scratch, on a time budget
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

POSTS_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "posts-dev"

#: Extra `instacli train` flags per configuration; everything else is the CLI default.
CONFIGS: dict[str, list[str]] = {
    "vit-scratch": ["--encoder", "vit-scratch"],
    "efficientnet-lite0": ["--encoder", "efficientnet-lite0"],  # its recipe: frozen probe + semantic prior
    "efficientnet-lite0-finetune": ["--encoder", "efficientnet-lite0", "--no-freeze-encoder", "--encoder-lr", "2e-4", "--lr", "1e-3",
                                    "--epochs", "6", "--batch-size", "32", "--time-budget", "480"],
    "inception-v3": ["--encoder", "inception-v3", "--pretrained", "none", "--image-size", "128", "--time-budget", "600"],
    "hf-vit": ["--encoder", "hf-vit", "--time-budget", "600"],
    "seed-512": ["--encoder", "vit-scratch", "--preset", "seed-512", "--batch-size", "16", "--epochs", "1", "--time-budget", "300"],
}


def sh(*args: str) -> str:
    """Run an instacli command; stream its stderr, return its stdout."""
    done = subprocess.run([sys.executable, "-m", "instacli", *args], stdout=subprocess.PIPE, text=True, check=True)
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", choices=sorted(CONFIGS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/instacli-bench"), help="Folder for the dataset and runs.")
    parser.add_argument("--source", type=Path, default=POSTS_DEV)
    parser.add_argument("--extra", default="", help="More `instacli train` flags, e.g. '--likes-loss mse'.")
    args = parser.parse_args()

    data = args.work / "posts-dev-seed"
    if not data.exists():
        started = time.perf_counter()
        sh("data", "build", str(args.source), "--out", str(data), "--synthetic-engagement", "seed", "--seed", "42")
        print(f"data build: {time.perf_counter() - started:.0f} s")
    for name in args.configs:
        extra = shlex.split(args.extra)
        run = args.work / ("run-" + "-".join([name, *(a.strip("-") for a in extra)]))
        started = time.perf_counter()
        sh("train", "--data", str(data), "--out", str(run), "--overwrite", "--quiet", *CONFIGS[name], *extra)
        train_s = time.perf_counter() - started
        metrics = json.loads(sh("evaluate", str(run), "--data", str(data), "--json"))
        total_s = time.perf_counter() - started
        ratio = metrics["likes_mae"] / metrics["likes_mae_class_median"]
        print(json.dumps({k: metrics[k] for k in ("accuracy", "f1_macro", "n", "likes_mae", "likes_mae_class_median",
                                                   "likes_rmse", "likes_r2", "likes_spearman", "log_likes_mae")}))
        print(f"{name} {args.extra}: test accuracy {metrics['accuracy']:.4f}, train {train_s / 60:.1f} min, train+evaluate {total_s / 60:.1f} min, "
              f"likes MAE {metrics['likes_mae']:,.0f} = {ratio:.3f} × class-median MAE {metrics['likes_mae_class_median']:,.0f}")


if __name__ == "__main__":
    main()
