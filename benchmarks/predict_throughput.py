"""Predict throughput: ``instacli predict`` versus the bare model forward, and versus a transformers pipeline.

    python benchmarks/predict_throughput.py [--quick] [--work DIR] [--skip-hf]

On 2,000 photos of posts-dev (1,000 per category), every side in a fresh child process that first
imports the same modules (torch, instacli, its encoder plugins, ``transformers.pipeline``), then is
timed to its last output (model loading and kernel warm-up included on every side), alternating
sides ``--repeats`` times and keeping each side's best:

* ``instacli predict RUN FOLDER --out preds.csv``: the real CLI entry point (files listed, decoded
  in DataLoader workers, scored, written to CSV);
* bare forward: the run's network loaded from the run, then ``inference_mode`` + autocast at the
  same precision and batch size (64) over the same photos pre-decoded, center-cropped and
  normalized into one in-memory tensor before the timer starts;
* ``transformers.pipeline("image-classification")`` with a small local ``ViTForImageClassification``
  checkpoint, called once per file as its documentation shows (``classifier(path)``), against
  ``instacli predict`` of a run trained (one epoch) with ``--encoder hf-vit --pretrained`` that checkpoint.

Ratios: predict_vs_bare = instacli / bare (target ≥ 0.8) and predict_vs_hf_pipeline = instacli /
pipeline (target ≥ 3).
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

BATCH = 64


# ---------------------------------------------------------------- children (one measurement each)
def preimport() -> None:
    """The same imports, untimed, in every child."""
    import torch  # noqa: F401
    from transformers import pipeline  # noqa: F401

    import instacli.cli.predict  # noqa: F401
    import instacli.prediction  # noqa: F401
    import instacli_plugins  # noqa: F401


def child_instacli(run: Path, folder: Path, out: Path, *flags: str) -> dict:
    from instacli.cli.main import main

    sys.argv = ["instacli", "predict", str(run), str(folder), "--out", str(out), "--overwrite", *map(str, flags)]
    started = time.perf_counter()
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    seconds = time.perf_counter() - started
    rows = sum(1 for _ in out.open()) - 1
    return {"images": rows, "seconds": seconds}


def child_bare(run: Path, folder: Path) -> dict:
    import numpy as np
    import torch

    from instacli.augment import eval_view
    from instacli.photo_files import decode_square
    from instacli.model import load_run
    from instacli.launch import resolve_mixed_precision

    files = common.photos(folder)
    config = json.loads((run / "config.json").read_text())
    size = round(config["preprocess"]["image_size"] / config["preprocess"]["crop_pct"])
    decoded = torch.from_numpy(np.stack([decode_square(f, size) for f in files]))
    started = time.perf_counter()
    loaded = load_run(run)
    model = loaded.model.eval()
    load_seconds = time.perf_counter() - started
    pixels = eval_view(decoded, loaded.preprocess).contiguous()  # part of the pre-decoding: not timed
    features = torch.zeros(len(files), len(loaded.scaler.features))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_mixed_precision("auto", loaded.config.encoder))  # as instacli
    forward_started = time.perf_counter()
    outputs = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        for start in range(0, len(files), BATCH):
            logits, likes = model(pixels[start : start + BATCH], features[start : start + BATCH])
            outputs.append(torch.softmax(logits.float(), 1))
    seconds = load_seconds + time.perf_counter() - forward_started
    return {"images": int(sum(len(o) for o in outputs)), "seconds": seconds}


def child_hf(checkpoint: Path, folder: Path) -> dict:
    from transformers import pipeline

    files = common.photos(folder)
    started = time.perf_counter()
    classifier = pipeline("image-classification", model=str(checkpoint), device="cpu")
    results = [classifier(str(path)) for path in files]
    return {"images": len(results), "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------- parent
def measure(kind: str, *args: object) -> float:
    done = subprocess.run([sys.executable, __file__, "--child", kind, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    if done.returncode != 0:
        sys.exit(f"{kind} side failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return measured["images"] / measured["seconds"]


def hf_checkpoint(work: Path) -> Path:
    """A small ViTForImageClassification (64 px, 4 layers, width 192) with its image processor, saved locally."""
    folder = work / "hf-vit-small"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=64, patch_size=8, hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                       intermediate_size=768, num_labels=2, id2label={0: "animal", 1: "landscape"}, label2id={"animal": 0, "landscape": 1})
    tmp = folder.with_name(folder.name + ".tmp")
    ViTForImageClassification(config).save_pretrained(tmp)
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], [Path(a) if not a.startswith("-") else a for a in sys.argv[3:]]
        preimport()
        measured = {"instacli": child_instacli, "bare": child_bare, "hf": child_hf}[kind](*rest)
        print(json.dumps(measured))
        return
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--skip-hf", action="store_true", help="only the bare comparison")
    p.add_argument("--workers", type=int, default=None, help="--workers for instacli predict (default: the CLI's)")
    args = p.parse_args()
    work = common.setup(args)
    repeats = common.repeats(args)
    per_class = 1000
    folder = common.subset(args.src, work / f"src-{per_class}", per_class)
    data = common.dataset(work, args.src, 200)
    flags = [] if args.workers is None else ["--workers", str(args.workers)]
    n = len(common.photos(folder))
    common.log(f"predict throughput: {n} photos, batch {BATCH}, {repeats} repeat(s), every side in a fresh process")

    run = common.trained_run(work, data, "predict-vit-scratch")
    rates = common.alternate({
        "instacli predict": lambda: measure("instacli", run, folder, work / "preds.csv", *flags),
        "bare forward": lambda: measure("bare", run, folder),
    }, repeats)
    best = common.summarize(rates)
    lines = [("predict_vs_bare", best["instacli predict"] / best["bare forward"], 0.8)]

    if not args.skip_hf:
        from instacli import registry

        if "hf-vit" not in registry.encoders.names():
            sys.exit("encoder hf-vit is not in the registry yet")
        checkpoint = hf_checkpoint(work)
        hf_run = common.trained_run(work, data, "predict-hf-vit", "--encoder", "hf-vit", "--pretrained", checkpoint)
        rates = common.alternate({
            "instacli predict (hf-vit run)": lambda: measure("instacli", hf_run, folder, work / "preds-hf.csv", *flags),
            "transformers pipeline": lambda: measure("hf", checkpoint, folder),
        }, max(1, repeats - 1))
        best = common.summarize(rates)
        lines.append(("predict_vs_hf_pipeline", best["instacli predict (hf-vit run)"] / best["transformers pipeline"], 3.0))
    for name, ratio, target in lines:
        common.result(name, ratio, target)


if __name__ == "__main__":
    main()
