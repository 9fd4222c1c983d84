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
gives the same ratio in steady state, from the first row written to the last: the part of the cost
that grows with the number of photos (the fixed start, actors and model loads, is printed apart).
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

    batches: list[tuple[float, int]] = []  # when each batch of rows was counted, and its rows (both engines count through Tally.add)
    add = prediction.Tally.add
    prediction.Tally.add = lambda self, rows: (batches.append((time.perf_counter(), len(rows))), add(self, rows))[1]
    flags = []
    if engine == "ray":
        import ray

        import instacli.ray_predict  # noqa: F401

        ray.init(num_cpus=cores(), include_dashboard=False, log_to_driver=False)
        flags = ["--engine", "ray"]
    started = time.perf_counter()
    measured = predict_throughput.child_instacli(run, folder, out, *flags)
    (first, first_rows), (last, _) = batches[0], batches[-1]
    return {**measured, "first_row_seconds": first - started, "steady_rate": (sum(n for _, n in batches) - first_rows) / max(last - first, 1e-9)}


#: Rows per second between the first and the last row, per side (the steady-state line).
STEADY: dict[str, list[float]] = {"local": [], "ray": []}


def measure(engine: str, run: Path, folder: Path, out: Path) -> float:
    done = subprocess.run([sys.executable, __file__, "--child", engine, str(run), str(folder), str(out)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if done.returncode != 0:
        sys.exit(f"{engine} side failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    common.log(f"  {engine}: {measured['images']} rows in {measured['seconds']:.1f} s, the first after {measured['first_row_seconds']:.1f} s, "
               f"then {measured['steady_rate']:.1f} rows/s")
    STEADY[engine].append(measured["steady_rate"] / cores())
    return measured["images"] / measured["seconds"] / cores()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], *map(Path, sys.argv[3:]))))
        return
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    work = common.setup(args)
    repeats = args.repeats or (2 if args.quick else 3)
    per_class = 200 if args.quick else 1000
    folder = common.subset(args.src, work / f"src-{per_class}", per_class)
    run = common.trained_run(work, common.dataset(work, args.src, 200), "predict-vit-scratch")
    common.log(f"ray predict: {len(common.photos(folder))} photos, {cores()} cores, {repeats} repeat(s), every side in a fresh process")
    rates = common.alternate({
        "local predict": lambda: measure("local", run, folder, work / "preds-local.csv"),
        "ray predict": lambda: measure("ray", run, folder, work / "preds-ray.csv"),
    }, repeats)
    best = common.summarize(rates, "images/s per core")
    common.log(f"steady state, images/s per core: ray {max(STEADY['ray']):.1f}, local {max(STEADY['local']):.1f}")
    common.result("ray_vs_local_per_core_steady", max(STEADY["ray"]) / max(STEADY["local"]), 0.8)
    common.result("ray_vs_local_per_core", best["ray predict"] / best["local predict"], 0.8)


if __name__ == "__main__":
    main()
