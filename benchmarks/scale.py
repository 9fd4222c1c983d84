"""Scale: time per photo and peak memory of each stage, from 1,000 to 100,000 photos (issue 12).

    python benchmarks/scale.py [--sizes 1000,10000,100000] [--quick] [--stages build,train,predict] [--repeats R] [--work DIR] [--plot PATH]

For each size N the benchmark generates a folder of N small, distinct JPEGs (two categories, 96×72 px:
a few hundred base pictures, each written with its own crop and noise, in a process pool) on local
disk under ``--work``, then runs three stages as real CLI calls (``instacli ...`` child processes)
while sampling the memory of each process tree (see ``common.measured``):

* ``build``   - ``instacli data build SRC --synthetic-engagement seed``
* ``train``   - ``instacli train --epochs 1`` with a tiny vit-scratch: the first decode of every split
  into the decode cache, one training epoch and the evaluation
* ``predict`` - ``instacli predict RUN SRC`` (every photo of the folder)

Time per photo is the stage's *marginal* cost, ``(t(N) - t(n0)) / (N - n0)`` with the same stage
timed on ``n0`` = 100 photos just before (alternated with N's runs): a CLI call's fixed cost
(starting Python, importing torch, loading a model: several seconds) would otherwise dominate small
N. It is computed from the CPU seconds of the stage's process tree (user + system, exact on Linux:
``common.measured``): on the shared 2-core development machine, wall time mostly measured the other
sessions' load (a 1k stage took longer than the 10k one). Wall seconds are printed beside it. Even CPU seconds vary with the load (caches
shared with other processes: ±0.3 s on a 3 s build, as much as 1,000 photos cost), so ``--repeats R``
runs each size's stages, and the baseline's, R times (alternated) and keeps each stage's least CPU
time (and its largest peak memory). ``--stages build`` (or ``build,train``) runs only the first stages.
Everything generated for a size is removed before the next one. Goals: time per photo within 1.5×
from the smallest to the largest N; peak RSS at the largest N ≤ 1.3× the one at the size before
(10k for the default sizes). The last line is ``scale ratio X target 1``: X ≥ 1 when both goals hold
(X = min over stages of the two goals' margins).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

STAGES = ("build", "train", "predict")
CATEGORIES = ("animal", "landscape")
BASE_PICTURES = 256
SIDE = (96, 72)
BASELINE_N = 100
TIME_SPREAD_GOAL = 1.5
MEMORY_GROWTH_GOAL = 1.3


@functools.cache
def _base_picture(seed: int) -> np.ndarray:
    """A smooth random picture, 2x the photo's size so that each photo can take its own crop."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(small).resize((SIDE[0] * 2, SIDE[1] * 2), Image.BICUBIC))


def _write_photos(task: tuple[Path, int, int]) -> None:
    """Photos ``start`` .. ``stop - 1`` of the folder: base picture ``k % BASE_PICTURES``, cropped at
    a place and noised with a seed of their own, so every file is a different picture (a build skips
    a picture seen twice in two categories)."""
    from PIL import Image

    folder, start, stop = task
    for k in range(start, stop):
        base = _base_picture(k % BASE_PICTURES)
        rng = np.random.default_rng(k)
        x, y = rng.integers(0, SIDE[0]), rng.integers(0, SIDE[1])
        crop = base[y : y + SIDE[1], x : x + SIDE[0]].astype(np.int16) + rng.integers(-12, 13, (SIDE[1], SIDE[0], 3))
        category = CATEGORIES[k % BASE_PICTURES % len(CATEGORIES)]
        Image.fromarray(crop.clip(0, 255).astype(np.uint8)).save(folder / category / f"{category}_{k:06d}.jpg", quality=85)


def generate(folder: Path, n: int) -> Path:
    """``folder/<category>/*.jpg``: ``n`` generated photos, written by a process per core."""
    for category in CATEGORIES:
        (folder / category).mkdir(parents=True, exist_ok=True)
    step = 500
    tasks = [(folder, start, min(n, start + step)) for start in range(0, n, step)]
    with multiprocessing.get_context("forkserver").Pool(2) as pool:
        list(pool.imap_unordered(_write_photos, tasks))
    return folder


def best(runs: list[common.Measured]) -> common.Measured:
    """One stage's repeats as one: the least CPU time (the run least slowed by other work; its wall
    time beside it) and the largest peaks."""
    least = min(runs, key=lambda m: m.cpu_seconds)
    peaks = [max(getattr(m, name) for m in runs) for name in ("peak_rss", "peak_pss", "peak_anon")]
    return common.Measured(least.seconds, *peaks, least.cpu_seconds, least.stdout)


def run_stages(root: Path, src: Path, stages: Sequence[str]) -> dict[str, common.Measured]:
    """``stages`` on the photos of ``src``, writing under ``root`` (what an earlier run wrote there is removed first)."""
    data, run, preds = root / "data", root / "run", root / "preds.csv"
    for path in (data, run, Path(os.environ["INSTACLI_CACHE"])):
        shutil.rmtree(path, ignore_errors=True)
    preds.unlink(missing_ok=True)
    python = [sys.executable, "-m", "instacli"]
    commands = {
        "build": [*python, "data", "build", src, "--out", data, "--synthetic-engagement", "seed"],
        "train": [*python, "train", "--data", data, "--out", run, "--epochs", "1", "--quiet", *common.TINY],
        "predict": [*python, "predict", run, src, "--out", preds],
    }
    results = {}
    for stage in stages:
        results[stage] = m = common.measured([str(c) for c in commands[stage]])
        common.log(f"  {src.parent.name:>12} {stage:<8} {m.seconds:8.1f} s  CPU {m.cpu_seconds:8.1f} s  peak RSS {m.peak_rss / 2**20:7.0f} MB  "
                   f"PSS {m.peak_pss / 2**20:7.0f} MB  anon {m.peak_anon / 2**20:7.0f} MB")
    return results


def measure_size(work: Path, n: int, baseline: Path, stages: Sequence[str], repeats: int) -> tuple[dict[str, common.Measured], dict[str, common.Measured]]:
    """``stages`` on ``n`` generated photos and on the ``baseline`` photos, alternated ``repeats``
    times (so that both see the same load on a shared machine), each stage's runs made one by
    :func:`best`: (on the baseline, on ``n``). Everything written for ``n`` is removed afterwards."""
    root = work / f"scale-{n}"
    shutil.rmtree(root, ignore_errors=True)
    try:
        src = generate(root / "photos", n)
        pairs = [(run_stages(baseline.parent, baseline, stages), run_stages(root, src, stages)) for _ in range(repeats)]
        return {s: best([b[s] for b, _ in pairs]) for s in stages}, {s: best([m[s] for _, m in pairs]) for s in stages}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def plot(path: Path, stages: Sequence[str], sizes: list[int], per_photo: dict[str, list[float]], peaks: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for stage in stages:
        shown = [(n, 1000 * t) for n, t in zip(sizes, per_photo[stage]) if t > 0]  # noise can make a small N's margin negative
        if shown:
            left.plot(*zip(*shown), "o-", label=stage)
        right.plot(sizes, [m / 2**20 for m in peaks[stage]], "o-", label=stage)
    left.set(xscale="log", yscale="log", xlabel="photos", ylabel="CPU ms per photo (marginal)", title="Time per photo")
    right.set(xscale="log", yscale="log", xlabel="photos", ylabel="MB (peak RSS, process tree)", title="Peak memory")
    for axes in (left, right):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="comma-separated numbers of photos")
    p.add_argument("--plot", type=Path, default=common.ROOT / "benchmarks" / "results" / "scale.png", help="the figure to write")
    p.add_argument("--stages", default=",".join(STAGES), help=f"the first stages to run, comma-separated (of {','.join(STAGES)}): each needs the ones before")
    args = p.parse_args()
    stages = args.stages.split(",")
    if stages != list(STAGES[: len(stages)]):
        p.error(f"--stages {args.stages}: give the first stages, in order: build, build,train or build,train,predict")
    repeats = common.repeats(args, quick=1, full=1)
    sizes = [500, 2000] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["INSTACLI_CACHE"] = str(args.work / "cache")
    common.log(f"scale: stages {', '.join(stages)} on {BASELINE_N} (fixed cost) and {', '.join(map(str, sizes))} generated photos, {repeats} time(s) each")
    root = args.work / f"scale-{BASELINE_N}"
    shutil.rmtree(root, ignore_errors=True)
    try:
        baseline_src = generate(root / "photos", BASELINE_N)
        both = {n: measure_size(args.work, n, baseline_src, stages, repeats) for n in sizes}
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(args.work / "cache", ignore_errors=True)
    baseline, measured = {n: both[n][0] for n in sizes}, {n: both[n][1] for n in sizes}
    per_photo = {s: [(measured[n][s].cpu_seconds - baseline[n][s].cpu_seconds) / (n - BASELINE_N) for n in sizes] for s in stages}
    peaks = {s: [measured[n][s].peak_rss for n in sizes] for s in stages}
    common.log(f"\n| stage | photos | wall s | CPU s | CPU s at {BASELINE_N} | CPU ms/photo (marginal) | peak RSS MB | peak PSS MB | peak anon MB |")
    common.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in stages:
        for i, n in enumerate(sizes):
            m = measured[n][s]
            common.log(f"| {s} | {n:,} | {m.seconds:.1f} | {m.cpu_seconds:.1f} | {baseline[n][s].cpu_seconds:.1f} | {1000 * per_photo[s][i]:.2f} | "
                       f"{m.peak_rss / 2**20:.0f} | {m.peak_pss / 2**20:.0f} | {m.peak_anon / 2**20:.0f} |")
    margins = []
    for s in stages:
        spread = max(per_photo[s]) / min(per_photo[s])
        growth = peaks[s][-1] / peaks[s][-2] if len(sizes) > 1 else 1.0
        margins += [TIME_SPREAD_GOAL / spread, MEMORY_GROWTH_GOAL / growth]
        common.log(f"{s}: time per photo spread {spread:.2f}x (goal <= {TIME_SPREAD_GOAL}), "
                   f"peak RSS {sizes[-1]:,} / {sizes[-2] if len(sizes) > 1 else sizes[-1]:,} = {growth:.2f}x (goal <= {MEMORY_GROWTH_GOAL})")
    plot(args.plot, stages, sizes, per_photo, peaks)
    common.log(f"figure: {args.plot}")
    common.result("scale", min(margins), 1.0)


if __name__ == "__main__":
    main()
