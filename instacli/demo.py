"""``instacli demo``: the whole pipeline on the bundled, freely licensed sample photos.

Sample photos → dataset with the original design's synthetic engagement → short training →
evaluation → predictions for the sample folder. Everything goes to a temporary or given folder,
never into the installed package.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from instacli.evaluation import evaluate
from instacli.prediction import PredictSummary, predict_folder
from instacli.settings import TrainSettings
from instacli.progress import Reporter
from instacli.training import TrainResult, train


def sample_folder() -> Path:
    """The bundled sample photos (one sub-folder per category, with ATTRIBUTION.csv)."""
    return Path(str(files("instacli") / "sample_data"))


@dataclass
class DemoResult:
    workdir: Path
    train: TrainResult
    evaluation: dict[str, Any]
    predictions: PredictSummary
    seconds: float


#: Per-encoder training settings of the demo; other encoders train 40 epochs at the defaults. 124
#: photos are too few to learn vision from scratch, so the default is the ImageNet-pretrained
#: encoder shipped on PyPI, frozen (embeddings computed once).
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": {"epochs": 40, "batch_size": 16, "lr": 2e-3},  # frozen by its registry recipe
}


def run_demo(
    workdir: Path | str | None = None,
    encoder: str = "efficientnet-lite0",
    reporter: Reporter | None = None,
    overwrite: bool = False,
) -> DemoResult:
    """Build, train, evaluate and predict on the sample photos inside ``workdir`` (a new temp folder by default)."""
    from instacli_datasets import build_dataset

    started = time.perf_counter()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="instacli-demo-"))
    data, run = workdir / "data", workdir / "run"
    build_dataset(sample_folder(), data, synthetic="seed", seed=42, overwrite=overwrite)
    options = {"epochs": 40, **DEMO_SETTINGS.get(encoder, {})}
    settings = TrainSettings(data=data, out=run, encoder=encoder, overwrite=overwrite, patience=options["epochs"], **options)
    result = train(settings, reporter)
    evaluation = evaluate(run, data, split="test")
    predictions = predict_folder(run, sample_folder(), workdir / "predictions.csv", overwrite=overwrite)
    return DemoResult(workdir, result, evaluation, predictions, time.perf_counter() - started)
