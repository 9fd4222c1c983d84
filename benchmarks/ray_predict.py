"""Scoring on Ray: ``instacli predict --engine ray`` versus the local path, per core.

    python benchmarks/ray_predict.py [--quick] [--work DIR] [--repeats N]

On 2,000 photos of posts-dev (1,000 per category; 200 per category with ``--quick``) and the run the
predict benchmark trains (vit-scratch, 64 px), each side runs in a fresh child process through the
real CLI entry point, writing CSV, alternating ``--repeats`` times and keeping each side's best:

* local: ``instacli predict RUN FOLDER --out preds.csv`` (DataLoader decoding, torch on every core);
* ray: ``instacli predict RUN FOLDER --engine ray --out preds.csv`` joined to a local Ray instance
  of as many CPUs as the machine has, started in the child *before* the timer (as an existing cluster
  would be): the timer covers building the pipeline, decoding tasks, the model actors' start and model
  load, scoring and writing.

Both sides' rates are divided by the cores they used (the same cores here), and the ratio is
ray per core / local per core (target ≥ 0.8): what distributing costs on one machine. A second line
gives the ratio of the marginal rates, (N − n) photos over the time a run of N takes beyond a run of
n = 64 photos: the cost that grows with the folder, without the fixed start (Ray's actors import
torch and load the run; printed apart). That is the rate an archive of 10⁵ photos sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import predict_throughput  # noqa: E402


def cores() -> int:
    return len(os.sched_getaffinity(0))


def child(engine: str, run: Path, folder: Path, out: Path) -> dict:
    import instacli.cli.predict  # noqa: F401  (imported by both sides before the timer)
    from instacli import prediction

    batches: list[float] = []  # when each batch of rows was counted (both engines count through Tally.add)
    add = prediction.Tally.add
    prediction.Tally.add = lambda self, rows: (batches.append(time.perf_counter()), add(self, rows))[1]
    flags = []
    if engine == "ray":
        import ray

        import instacli.ray_predict  # noqa: F401

        ray.init(num_cpus=cores(), include_dashboard=False, log_to_driver=False)
        flags = ["--engine", "ray"]
    started = time.perf_counter()
    measured = predict_throughput.child_instacli(run, folder, out, *flags)
    return {**measured, "first_row_seconds": batches[0] - started}


#: The fastest time of each side's small run (photos, seconds): the fixed cost the marginal rate leaves out.
SMALL: dict[str, tuple[int, float]] = {}
#: Each side's marginal rates per core, one per repeat.
MARGINAL: dict[str, list[float]] = {"local": [], "ray": []}


def run_child(engine: str, run: Path, folder: Path, out: Path) -> dict:
    out.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, __file__, "--child", engine, str(run), str(folder), str(out)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if done.returncode != 0:
        sys.exit(f"{engine} side failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(engine: str, run: Path, folder: Path, small: Path, out: Path) -> float:
    """One repeat of a side: a small run (the fixed cost), then the full folder; returns the whole run's rate per core."""
    little = run_child(engine, run, small, out)
    if engine not in SMALL or little["seconds"] < SMALL[engine][1]:
        SMALL[engine] = (little["images"], little["seconds"])
    measured = run_child(engine, run, folder, out)
    marginal = (measured["images"] - little["images"]) / max(measured["seconds"] - little["seconds"], 1e-9) / cores()
    MARGINAL[engine].append(marginal)
    common.log(f"  {engine}: {measured['images']} rows in {measured['seconds']:.1f} s (the first after {measured['first_row_seconds']:.1f} s); "
               f"{little['images']} rows in {little['seconds']:.1f} s; marginal {marginal:.1f} images/s per core")
    return measured["images"] / measured["seconds"] / cores()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], *map(Path, sys.argv[3:]))))
        return
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    work = common.setup(args)
    repeats = common.repeats(args)
    folder = common.sized_subset(args, work, quick=200, full=1000)
    small = common.subset(args.src, work / "src-32", 32)
    run = common.trained_run(work, common.dataset(work, args.src, 200), "predict-vit-scratch")
    common.log(f"ray predict: {len(common.photos(folder))} photos, {cores()} cores, {repeats} repeat(s), every side in a fresh process")
    rates = common.alternate({
        "local predict": lambda: measure("local", run, folder, small, work / "preds-local.csv"),
        "ray predict": lambda: measure("ray", run, folder, small, work / "preds-ray.csv"),
    }, repeats)
    best = common.summarize(rates, "images/s per core")
    common.log(f"fixed cost (fastest run of {SMALL['ray'][0]} photos): ray {SMALL['ray'][1]:.1f} s, local {SMALL['local'][1]:.1f} s; "
               f"marginal images/s per core: ray {max(MARGINAL['ray']):.1f}, local {max(MARGINAL['local']):.1f}")
    common.result("ray_vs_local_per_core_marginal", max(MARGINAL["ray"]) / max(MARGINAL["local"]), 0.8)
    common.result("ray_vs_local_per_core", best["ray predict"] / best["local predict"], 0.8)


if __name__ == "__main__":
    main()
