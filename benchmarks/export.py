"""Predict throughput with onnxruntime on the exported graph versus PyTorch, on this CPU.

    python benchmarks/export.py [--quick] [--work DIR] [--repeats N]

For each of two runs trained one epoch on posts-dev (efficientnet-lite0, its recipe's frozen probe
with the semantic prior, at 224 px; vit-scratch at its default 64 px), exported once with
``instacli export RUN --format onnx``, two measurements, alternating sides ``--repeats`` times and
keeping each side's best:

* ``instacli predict RUN FOLDER --out preds.csv --backend pytorch|onnxruntime`` on 1,000 photos (200
  with ``--quick``), each side in a fresh child process timed to its last row (loading included), as
  ``predict_throughput.py`` times it;
* the network alone: the same photos pre-decoded and cropped into one tensor, scored in batches of
  64 by ``run.model`` (PyTorch, inference mode, fp32 as predict runs it on this CPU) and by the
  onnxruntime session that ``--backend onnxruntime`` uses, in this process.

Ratios: onnxruntime / PyTorch images per second (higher means onnxruntime is faster); target 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import predict_throughput  # noqa: E402  (its child process times `instacli predict`)

BATCH = 64
RUNS = {
    "efficientnet-lite0": ["--encoder", "efficientnet-lite0"],
    "vit-scratch": ["--encoder", "vit-scratch"],
}


def forward_rates(run_path: Path, files: list[Path], repeats: int) -> dict[str, float]:
    """Best images/s of the PyTorch network and of the onnxruntime graph on the same pre-decoded photos."""
    import numpy as np
    import torch

    from instacli.augment import eval_view
    from instacli.export import load_exported
    from instacli.decode_cache import decode_square
    from instacli.model import load_run

    pytorch, exported = load_run(run_path), load_exported(run_path)
    decoded = torch.from_numpy(np.stack([decode_square(f, pytorch.preprocess.resize_size) for f in files]))
    pixels = eval_view(decoded, pytorch.preprocess)  # channels-last, as predict feeds the network
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
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    work = common.setup(args)
    repeats = common.repeats(args)
    folder = common.sized_subset(args, work, quick=100, full=500)
    data = common.dataset(work, args.src, 200)
    files = common.photos(folder)
    common.log(f"export benchmark: {len(files)} photos, batch {BATCH}, {repeats} repeat(s); {', '.join(common.torch_threads())}")
    results = []
    for name, flags in RUNS.items():
        run = common.trained_run(work, data, f"export-{name}", *flags)
        if not (run / "model.onnx").is_file():
            common.cli("export", run, "--format", "onnx")
        common.log(f"--- {name}")
        rates = common.alternate({backend: lambda b=backend: predict_throughput.measure("instacli", run, folder, work / f"preds-{b}.csv", "--backend", b)
                                  for backend in ("pytorch", "onnxruntime")}, repeats)
        best = common.summarize(rates)
        forward = forward_rates(run, files, repeats)
        results += [(f"export_predict_{name}", best["onnxruntime"] / best["pytorch"]),
                    (f"export_forward_{name}", forward["onnxruntime forward"] / forward["PyTorch forward"])]
    for name, ratio in results:
        common.result(name, ratio, 1.0)


if __name__ == "__main__":
    main()
