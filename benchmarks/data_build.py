"""Dataset build: ``instacli data build`` versus a plain one-process PIL loop, on the same photos.

    python benchmarks/data_build.py [--quick] [--work DIR]

instacli side: ``instacli data build SRC --out DS --synthetic-engagement seed`` in a child process
on posts-dev (all 3,200 photos; 800 with --quick); its rate is ``build_report.json``'s
``images_per_second``: the whole build (listing, decoding in the process pool, splitting, writing
the Arrow dataset), without the CLI's start-up. Baseline: one process, for each photo PIL open →
RGB → resize to at most 256 px on the longer side → JPEG encode (quality 95) into memory, which is
what a build must at least do. Ratio = instacli / baseline; target ≥ 1.6 on 2 cores.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGET = 1.6
MAX_SIDE = 256


def instacli_rate(src: Path, out: Path) -> float:
    common.cli("data", "build", src, "--out", out, "--synthetic-engagement", "seed", "--overwrite")
    report = json.loads((out / "build_report.json").read_text())
    return report["images"] / report["seconds"]


def plain_rate(files: list[Path]) -> float:
    from PIL import Image

    started = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = min(1.0, MAX_SIDE / max(image.size))
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=95)
    return len(files) / (time.perf_counter() - started)


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    work = common.setup(args)
    per_class = 400 if args.quick else None
    repeats = common.repeats(args, quick=2, full=2)
    src = common.subset(args.src, work / f"src-{per_class or 'all'}", per_class)
    files = common.photos(src)
    out = work / "build-bench"
    common.log(f"data build: {len(files)} photos, {repeats} repeat(s)")
    rates = common.alternate({
        "instacli data build": lambda: instacli_rate(src, out),
        "plain PIL loop": lambda: plain_rate(files),
    }, repeats)
    shutil.rmtree(out, ignore_errors=True)
    best = common.summarize(rates)
    common.result("data_build", best["instacli data build"] / best["plain PIL loop"], TARGET)


if __name__ == "__main__":
    main()
