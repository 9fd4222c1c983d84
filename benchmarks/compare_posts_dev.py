"""The real comparison: four image encoders (+ the baselines, + the original seed-512 design) on
``../shared/data/posts-dev``, within an hour on 2 CPU cores. Not a test.

    python benchmarks/compare_posts_dev.py --cache /tmp/bench            # the full run (≤ 60 min)
    python benchmarks/compare_posts_dev.py --cache /tmp/bench --quick    # smoke run: subset, tiny budgets (~3 min)

``--cache`` keeps the built dataset (and the report, unless ``--out``) between invocations; the
comparison resumes like ``instacli compare`` does, so an interrupted benchmark started again only
trains what is missing. posts-dev has photos but no engagement, so the likes come from the
synthetic generator (``--engagement realistic`` by default: likes driven by followers, as on a real
account; ``seed`` is the original design's uniform ranges per category).

Per-encoder budgets (:data:`FULL`), chosen from throughput measured on 2 cores with bf16 (AMX):
vit-scratch trains with the CLI defaults (so this run is also its quality benchmark) and hf-vit
(≈ 2M parameters at 64 px, ≈ 200 images/s) from scratch for up to 30 epochs or 8 minutes; efficientnet-lite0 is a frozen ImageNet probe (embedding 3,200 photos
takes about a minute, then the heads train in seconds); inception-v3 is a frozen ImageNet probe at
299 px when torchvision's weights are in the torch hub cache, and otherwise (offline) is trained
from scratch at 96 px for up to 4 epochs or 8 minutes; the seed-512
design (≈ 13 images/s at 512 px: about 3 minutes an epoch) gets up to 3 epochs or 5 minutes.
Budgets sum to ≈ 45 minutes; measured on 2 quiet cores: 24 minutes in all (most runs finish early).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = ROOT.parent / "shared" / "data" / "posts-dev"
ENCODERS = ("vit-scratch", "hf-vit", "inception-v3", "efficientnet-lite0")
INCEPTION_WEIGHTS = "inception_v3_google-0cc3c7bd.pth"  # torchvision's Inception_V3_Weights.IMAGENET1K_V1 file

#: Settings per encoder for the full run (``--set ENCODER.KEY=VALUE`` of ``instacli compare``).
FULL: dict[str, dict[str, Any]] = {
    "vit-scratch": {"time_budget": 900},  # the CLI defaults: this run is also vit-scratch's quality benchmark
    "hf-vit": {"epochs": 30, "time_budget": 480},
    "efficientnet-lite0": {"pretrained": "imagenet", "freeze_encoder": True, "epochs": 60, "time_budget": 300},
    "inception-v3": {"pretrained": "imagenet", "freeze_encoder": True, "epochs": 60, "time_budget": 300},
    "seed-512": {"epochs": 3, "time_budget": 300, "batch_size": 32},
}
#: inception-v3 when its ImageNet weights are not cached and there is no network.
INCEPTION_OFFLINE = {"pretrained": "none", "freeze_encoder": False, "image_size": 96, "epochs": 4, "time_budget": 480}

#: Smoke run: a subset of the photos and budgets of seconds, to prove every path works.
QUICK_PER_CLASS = 40
QUICK: dict[str, dict[str, Any]] = {
    "vit-scratch": {"epochs": 2, "time_budget": 30},
    "hf-vit": {"epochs": 2, "time_budget": 30},
    "efficientnet-lite0": {"pretrained": "imagenet", "freeze_encoder": True, "epochs": 3, "time_budget": 30},
    "inception-v3": {"pretrained": "imagenet", "freeze_encoder": True, "epochs": 3, "time_budget": 30},
    "seed-512": {"epochs": 1, "time_budget": 1, "batch_size": 8},  # stopped after ≈ 60 s: shows the failure path
}
INCEPTION_OFFLINE_QUICK = {"pretrained": "none", "freeze_encoder": False, "image_size": 75, "epochs": 1, "time_budget": 30}


def inception_weights_cached() -> bool:
    import torch

    return (Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS).is_file()


def subset_source(src: Path, dest: Path, per_class: int) -> Path:
    """``dest/<category>/`` with symbolic links to the first ``per_class`` photos of each category."""
    for category in sorted(p for p in src.iterdir() if p.is_dir()):
        target = dest / category.name
        target.mkdir(parents=True, exist_ok=True)
        for photo in sorted(p for p in category.iterdir() if p.is_file())[:per_class]:
            link = target / photo.name
            if not link.exists():
                link.symlink_to(photo.resolve())
    return dest


def dataset(cache: Path, src: Path, engagement: str, quick: bool) -> Path:
    """Build posts-dev (or its quick subset) into ``cache`` once; later calls reuse it."""
    from instacli_datasets import build_dataset

    name = f"posts-dev-{engagement}" + (f"-quick{QUICK_PER_CLASS}" if quick else "")
    out = cache / name
    if (out / "dataset_dict.json").is_file():
        print(f"dataset: {out} (cached)")
        return out
    if quick:
        src = subset_source(src, cache / f"posts-dev-subset{QUICK_PER_CLASS}", QUICK_PER_CLASS)
    started = time.perf_counter()
    report = build_dataset(src, out, synthetic=engagement, seed=42, workers=2)
    print(f"dataset: {out} built in {time.perf_counter() - started:.0f} s: {report.counts}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="folder for the built dataset (and the report unless --out)")
    parser.add_argument("--out", type=Path, help="report folder [default: CACHE/compare-posts-dev[-quick]]")
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help=f"photo folder [default: {DEFAULT_SRC}]")
    parser.add_argument("--engagement", choices=("realistic", "seed"), default="realistic", help="synthetic likes generator")
    parser.add_argument("--regressors", default="conv1d", help="likes regressors, comma-separated [default: conv1d]")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per combination [default: 1]")
    parser.add_argument("--no-seed-preset", action="store_true", help="leave the original seed-512 design out")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_PER_CLASS} photos per category, budgets of seconds")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rich.console import Console

    from instacli.cli.compare import RichCompareReporter, print_table
    from instacli.compare import compare
    from instacli.errors import InstacliError

    if not args.src.is_dir():
        print(f"error: {args.src}: no such folder; pass --src", file=sys.stderr)
        return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    out = args.out or args.cache / ("compare-posts-dev-quick" if args.quick else "compare-posts-dev")
    overrides = {k: dict(v) for k, v in (QUICK if args.quick else FULL).items()}
    if not inception_weights_cached():
        overrides["inception-v3"] = dict(INCEPTION_OFFLINE_QUICK if args.quick else INCEPTION_OFFLINE)
        print(f"inception-v3: torchvision's ImageNet weights are not cached ({INCEPTION_WEIGHTS}); training it from scratch "
              f"at {overrides['inception-v3']['image_size']} px instead of a frozen probe")
    if args.no_seed_preset:
        overrides.pop("seed-512")
    for name, settings in overrides.items():
        print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in settings.items()))

    started = time.perf_counter()
    try:
        data = dataset(args.cache, args.src, args.engagement, args.quick)
        result = compare(
            data, out, ENCODERS, [r.strip() for r in args.regressors.split(",") if r.strip()], seeds=args.seeds,
            include_seed_preset=not args.no_seed_preset, overrides=overrides, reporter=RichCompareReporter(Console()),
        )
    except InstacliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from instacli.report import render_report

    render_report(result.results, result.out)
    print_table(result.results)
    minutes = (time.perf_counter() - started) / 60
    print(f"{len(result.trained)} trained, {len(result.reused)} reused, {len(result.failed)} failed/stopped in {minutes:.1f} min")
    print(f"report: {result.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
