"""Training throughput: ``instacli train`` versus a bare PyTorch loop, same model, batch size and precision.

    python benchmarks/train_throughput.py [--quick] [--encoder vit-scratch] [--work DIR]

instacli side: ``instacli train`` in a child process on a dataset built from posts-dev. Its rate is
read from ``metrics.jsonl`` over epochs 2..E (``images_seen`` and ``elapsed``): the whole training
loop in steady state, with the batched augmentation, the per-epoch validation, metrics and
checkpoints. Not counted: start-up, data loading, decoding (cached beforehand), and epoch 1, whose
first steps pay oneDNN's kernel creation (≈ 10 s on this machine). Bare side: the same network
(rebuilt from the run's ``config.json``), ``torch.autocast`` at the same precision, AdamW,
cross-entropy + L1 likes, on the same training images pre-decoded, center-cropped and normalized
into one in-memory float tensor (channels-last, as instacli feeds convolutions), for the same
number of images after 3 warm-up steps.
Ratio = instacli / bare; target ≥ 0.85.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGET = 0.85
#: per encoder: photos per category (None = all 1,600), epochs, batch size, extra flags (full, quick)
PLANS = {
    "vit-scratch": {"full": (800, 3, 64), "quick": (400, 2, 64), "flags": []},
    "efficientnet-lite0": {"full": (200, 2, 32), "quick": (100, 2, 32), "flags": ["--pretrained", "none", "--no-freeze-encoder"]},  # its recipe freezes it
}
WARMUP_STEPS = 3


def instacli_rate(data: Path, run: Path, encoder: str, epochs: int, batch: int, flags: list[str], extra: list[str]) -> float:
    """images/s of ``instacli train`` over epochs 2..``epochs``."""
    common.cli("train", "--data", data, "--out", run, "--encoder", encoder, "--epochs", epochs, "--batch-size", batch,
               "--patience", 1000, "--quiet", "--overwrite", *flags, *extra)
    records = common.read_jsonl(run / "metrics.jsonl")
    first, last = records[0], records[-1]
    overhead = [r["elapsed"] - p["elapsed"] - r["seconds"] for p, r in zip(records, records[1:])]
    common.log(f"    epoch seconds {[round(r['seconds'], 1) for r in records]}, validation + checkpoint {[round(o, 1) for o in overhead]}")
    return (last["images_seen"] - first["images_seen"]) / (last["elapsed"] - first["elapsed"])


def _timed_images(run: Path) -> int:
    records = common.read_jsonl(run / "metrics.jsonl")
    return records[-1]["images_seen"] - records[0]["images_seen"]


def bare_rate(run: Path, data: Path, images: int, batch: int) -> float:
    """Train a fresh copy of the run's network on pre-decoded tensors for ``images`` images; images/s."""
    import torch
    import torch.nn.functional as F

    from instacli.augment import eval_view
    from instacli.model import load_run
    from instacli.split_arrays import load_split_arrays
    from instacli.launch import resolve_mixed_precision

    loaded = load_run(run)
    torch.manual_seed(0)
    from instacli.model import build_model

    model = build_model(loaded.config).train()
    split = load_split_arrays(data, "train", settings=None, scaler=loaded.scaler, task=loaded.config.task)
    pixels = eval_view(split.images(loaded.preprocess.resize_size), loaded.preprocess)  # (N, 3, S, S) float, channels_last as instacli feeds it
    features, labels, targets = split.features, split.labels, split.targets
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_mixed_precision("auto", loaded.config.encoder))  # as instacli
    steps = math.ceil(images / batch)
    per_epoch = len(pixels) // batch
    started = 0.0
    for step in range(WARMUP_STEPS + steps):
        if step == WARMUP_STEPS:
            started = time.perf_counter()
        if step % per_epoch == 0:
            order = torch.randperm(len(pixels))
        index = order[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits, likes = model(pixels[index].contiguous(memory_format=torch.channels_last), features[index])
            loss = F.cross_entropy(logits.float(), labels[index]) + F.l1_loss(likes.float(), targets[index])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--encoder", default="vit-scratch", choices=sorted(PLANS))
    p.add_argument("--extra", nargs="*", default=[], help="extra `instacli train` flags for the instacli side (e.g. --compile)")
    args = p.parse_args()
    work = common.setup(args)
    from instacli import registry

    if args.encoder not in registry.encoders.names():
        sys.exit(f"encoder {args.encoder} is not in the registry yet")
    plan = PLANS[args.encoder]
    per_class, epochs, batch = plan["quick" if args.quick else "full"]
    repeats = common.repeats(args, quick=1, full=2)
    data = common.dataset(work, args.src, per_class)
    run = work / "runs" / f"train-bench-{args.encoder}"
    common.log(f"train throughput, {args.encoder}: {data.name}, epochs 2..{epochs} timed, batch {batch}, {repeats} repeat(s)")
    # instacli goes first: its run gives the bare side the network to rebuild and the number of images
    # (decoding into the cache happens before the training loop, so the first run is timed alike)
    rates = common.alternate({
        "instacli train": lambda: instacli_rate(data, run, args.encoder, epochs, batch, plan["flags"], args.extra),
        "bare loop": lambda: bare_rate(run, data, _timed_images(run), batch),
    }, repeats)
    best = common.summarize(rates)
    name = "train_throughput" if args.encoder == "vit-scratch" else f"train_throughput_{args.encoder}"
    common.result(name, best["instacli train"] / best["bare loop"], TARGET)


if __name__ == "__main__":
    main()
