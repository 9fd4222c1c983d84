"""Memory: peak RSS of ``instacli predict`` on 20,000 files must stay under 1.5 GB (it streams).

    python benchmarks/predict_memory.py [--quick] [--work DIR]

The folder holds 20,000 symlinks (5,000 with --quick) to the posts-dev photos, repeated. ``instacli
predict`` runs as a child process (the real CLI, default flags, CSV output) while the parent samples
every 0.1 s the resident memory of the whole process tree (the CLI and its decode workers):
both the sum of RSS (counts pages shared between the processes once per process, so it
overestimates) and the sum of PSS (shares them out; what the tree really holds). The line printed
last is ``predict_memory ratio LIMIT/PEAK_RSS target 1``: higher is better, ≥ 1 means under 1.5 GB.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LIMIT_GB = 1.5


def repeated_folder(src: Path, dest: Path, n: int) -> Path:
    """``dest/<category>/<k>_<name>``: ``n`` symlinks cycling over the photos of ``src``."""
    if dest.is_dir():
        return dest
    originals = common.photos(src)
    tmp = dest.with_name(dest.name + ".tmp")
    for k in range(n):
        photo = originals[k % len(originals)]
        target = tmp / photo.parent.name / f"{k // len(originals)}_{photo.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(photo.resolve())
    tmp.rename(dest)
    return dest


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    work = common.setup(args)
    n = 5_000 if args.quick else 20_000
    folder = repeated_folder(args.src, work / f"repeated-{n}", n)
    data = common.dataset(work, args.src, 200)
    run = common.trained_run(work, data, "predict-vit-scratch")
    out = work / "preds-memory.csv"
    common.log(f"predict memory: {n} files (symlinks), run {run.name}")
    command = [sys.executable, "-m", "instacli", "predict", str(run), str(folder), "--out", str(out), "--overwrite"]
    measured = common.measured(command)
    peak_rss, peak_pss = measured.peak_rss, measured.peak_pss
    rows = sum(1 for _ in out.open()) - 1
    seconds = measured.seconds
    common.log(f"{rows} rows in {seconds:.0f} s; peak RSS (sum over the tree) {peak_rss / 2**30:.2f} GB, "
               f"peak PSS {peak_pss / 2**30:.2f} GB; limit {LIMIT_GB} GB")
    if rows != n:
        sys.exit(f"expected {n} rows, got {rows}")
    out.unlink()
    common.result("predict_memory", LIMIT_GB * 2**30 / max(peak_rss, 1), 1.0)


if __name__ == "__main__":
    main()
