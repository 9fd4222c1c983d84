"""Predict throughput with onnxruntime on the exported graph versus PyTorch, on this CPU.

    python benchmarks/export.py [--quick] [--work DIR] [--repeats N]

For each of two runs trained one epoch on posts-dev (efficientnet-lite0, its recipe's frozen probe
with the semantic prior, at 224 px; vit-scratch at its default 64 px), exported once with
``instacli export RUN --format onnx``, two measurements, alternating sides ``--repeats`` times and
keeping each side's best:

* ``instacli predict RUN FOLDER --out preds.csv [--backend onnxruntime]`` on 1,000 photos (200 with
  ``--quick``), each side in a fresh child process timed to its last row (loading included);
* the network alone: the same photos pre-decoded and cropped into one tensor, scored in batches of
  64 by ``run.model`` (PyTorch, inference mode, fp32 as predict runs it on this CPU) and by the
  onnxruntime session that ``--backend onnxruntime`` uses, in this process.

Ratios: onnxruntime / PyTorch images per second (higher means onnxruntime is faster); target 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BATCH = 64
RUNS = {
    "efficientnet-lite0": ["--encoder", "efficientnet-lite0"],
    "vit-scratch": ["--encoder", "vit-scratch"],
}


def child_predict(run: Path, folder: Path, out: Path, backend: str) -> dict:
    from instacli.cli.main import main

    sys.argv = ["instacli", "predict", str(run), str(folder), "--out", str(out), "--overwrite", "--backend", backend]
    started = time.perf_counter()
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return {"images": sum(1 for _ in out.open()) - 1, "seconds": time.perf_counter() - started}


def predict_rate(run: Path, folder: Path, out: Path, backend: str) -> float:
    done = subprocess.run([sys.executable, __file__, "--child", str(run), str(folder), str(out), backend], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"predict --backend {backend} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return measured["images"] / measured["seconds"]


def forward_rates(run_path: Path, files: list[Path], repeats: int) -> dict[str, float]:
    """Best images/s of the PyTorch network and of the onnxruntime graph on the same pre-decoded photos."""
    import numpy as np
    import torch

    from instacli.augment import eval_view
    from instacli.export import load_exported
    from instacli.images import decode_square
    from instacli.model import load_run

    pytorch, exported = load_run(run_path), load_exported(run_path)
    decoded = torch.from_numpy(np.stack([decode_square(f, pytorch.preprocess.resize_size) for f in files]))
    pixels = eval_view(decoded, pytorch.preprocess).contiguous()
    features = torch.zeros(len(files), len(pytorch.scaler.features))

    def score(network: object) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(files), BATCH):
                network(pixels[start : start + BATCH], features[start : start + BATCH])
        return len(files) / (time.perf_counter() - started)

    rates = common.alternate({"PyTorch forward": lambda: score(pytorch.model.eval()), "onnxruntime forward": lambda: score(exported.model)}, repeats)
    return common.summarize(rates)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        run, folder, out, backend = sys.argv[2:6]
        print(json.dumps(child_predict(Path(run), Path(folder), Path(out), backend)))
        return
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    work = common.setup(args)
    repeats = args.repeats or (2 if args.quick else 3)
    per_class = 100 if args.quick else 500
    folder = common.subset(args.src, work / f"src-{per_class}", per_class)
    data = common.dataset(work, args.src, 200)
    files = common.photos(folder)
    common.log(f"export benchmark: {len(files)} photos, batch {BATCH}, {repeats} repeat(s); {', '.join(common.torch_threads())}")
    results = []
    for name, flags in RUNS.items():
        run = common.trained_run(work, data, f"export-{name}", *flags)
        if not (run / "model.onnx").is_file():
            common.cli("export", run, "--format", "onnx")
        common.log(f"--- {name}")
        rates = common.alternate({backend: lambda b=backend: predict_rate(run, folder, work / f"preds-{name}-{b}.csv", b)
                                  for backend in ("pytorch", "onnxruntime")}, repeats)
        best = common.summarize(rates)
        forward = forward_rates(run, files, repeats)
        results += [(f"export_predict_{name}", best["onnxruntime"] / best["pytorch"]),
                    (f"export_forward_{name}", forward["onnxruntime forward"] / forward["PyTorch forward"])]
    for name, ratio in results:
        common.result(name, ratio, 1.0)


if __name__ == "__main__":
    main()
