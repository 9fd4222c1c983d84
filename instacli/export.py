"""``instacli export``: a trained run as one ONNX graph, and onnxruntime predicting with it.

The graph holds the whole network (encoder, category head with its semantic prior, likes regressor)
with a dynamic batch axis. What lies around it is described in a JSON file beside the graph
(``model.onnx`` → ``model.json``): the run's own ``config.json`` (decode size, crop, mean and std;
the engagement scaler with its medians; the likes target transform; the temperature and the
unfamiliarity threshold; the class names) plus an ``onnx`` section saying what each input and output
of the graph holds. ``instacli predict --backend onnxruntime`` reads both and goes through predict's
own code with the graph standing in for the PyTorch network, so a photo gets the same row either way
(tests/test_export.py: probabilities and log-likes within 1e-4).

Exporter: ``torch.onnx.export(..., dynamo=True)``, the torch.export-based one (it needs onnxscript),
the default since torch 2.9. It works offline. The legacy TorchScript exporter (``dynamo=False``) is
deprecated, and its graphs of these models on torch 2.14 disagreed with PyTorch (logits off by up to
36 on EfficientNet-Lite0, by 1.0 on vit-scratch even at the batch size it traced), so it is not offered.

Runs whose likes regressor is a scikit-learn estimator (``ridge``, ``gbrt``: refitted in NumPy when a
run loads) have no graph for it and are refused.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from instacli.encoders import Preprocess
from instacli.ensemble import score_views
from instacli.errors import InstacliError, require_extra
from instacli.io import atomic_path, check_writable_target, output_lock
from instacli.model import LoadedRun, load_run, read_config
from instacli.run_folder import CONFIG, is_run

#: Where ``export`` writes the graph when no ``--out`` is given, and where ``predict --backend
#: onnxruntime RUN`` looks for it.
DEFAULT_FILE = "model.onnx"
#: The optional extra that installs the exporter and the runtime.
EXTRA = "export"
#: The graph's inputs and outputs, by name, with what they hold (written into the JSON beside it).
INPUTS = {
    "pixels": "float32 (batch, 3, image_size, image_size): the photo's center square resized to resize_size, "
              "its center image_size crop, RGB scaled to [0, 1], then (x - mean) / std per channel (config.preprocess)",
    "features": "float32 (batch, F): each engagement number of config.scaler.features, a missing one replaced by its median, "
                "then (log1p(x) - mean) / std (config.scaler)",
    "text": "float32 (batch, text_dim): the caption's embedding by config.text_encoder (an empty caption for none)",
}
OUTPUTS = {
    "logits": "float32 (batch, classes): category logits; probabilities = softmax(logits / config.temperature), "
              "unfamiliar when -T * logsumexp(logits / T) > config.unfamiliar_threshold",
    "likes_z": "float32 (batch,): standardized log1p likes; likes = max(0, expm1(likes_z * scaler.target_std + scaler.target_mean))",
}
#: The export checks its graph against PyTorch on random photos and refuses one that differs more.
PARITY_LIMIT = 1e-3


def description_path(graph: Path) -> Path:
    """The JSON beside an exported graph (``model.onnx`` → ``model.json``)."""
    return Path(graph).with_suffix(".json")


class ExportedGraph(nn.Module):
    """The run's network as the graph computes it: only the inputs the run reads, only the outputs it has."""

    def __init__(self, model: nn.Module, inputs: list[str], outputs: list[str]) -> None:
        super().__init__()
        self.model, self.inputs, self.outputs = model, inputs, outputs

    def forward(self, pixels: torch.Tensor, features: torch.Tensor | None = None, text: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if features is None:  # a run without engagement inputs (the regressor then reads none)
            features = pixels.new_zeros((pixels.shape[0], 0))
        logits, likes_z = self.model(pixels, features, text)
        return tuple(out for out in (logits, likes_z) if out is not None)


class OnnxRuntimeNetwork(nn.Module):
    """An exported graph in onnxruntime, in the place of a run's PyTorch network: same call, same
    answers, so that predict's code (:func:`instacli.ensemble.score_views`) serves both backends.
    It holds no weights of its own (``eval``/``to`` change nothing)."""

    def __init__(self, graph: Path, preprocess: Preprocess) -> None:
        super().__init__()
        ort = require_extra("onnxruntime", EXTRA, "--backend onnxruntime")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(graph), providers=providers)
        except Exception as exc:  # noqa: BLE001 — onnxruntime raises its own types for a damaged file
            raise InstacliError(f"{graph}: not a readable ONNX graph ({str(exc).strip().splitlines()[0]}); export the run again") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        #: What :class:`~instacli.model.LoadedRun` reads of a network (``run.preprocess``).
        self.encoder = nn.Module()
        self.encoder.preprocess = preprocess

    def forward(self, pixels: torch.Tensor, features: torch.Tensor, text: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        given = {"pixels": pixels, "features": features, "text": text}
        feeds = {name: np.ascontiguousarray(given[name].float().cpu().numpy()) for name in self.input_names}
        answers = dict(zip(self.output_names, self.session.run(None, feeds)))
        logits, likes_z = (answers.get(name) for name in OUTPUTS)
        return (torch.from_numpy(logits).to(pixels.device) if logits is not None else None,
                torch.from_numpy(likes_z).to(pixels.device) if likes_z is not None else None)


def load_exported(path: Path | str) -> LoadedRun:
    """An exported graph ready to predict: ``path`` is the ``.onnx`` file or a run folder holding
    :data:`DEFAULT_FILE`; the JSON beside it rebuilds everything else."""
    path = Path(path)
    graph = path / DEFAULT_FILE if path.is_dir() else path
    description = description_path(graph)
    if not graph.is_file() or not description.is_file():
        raise InstacliError(f"{graph}: no exported model (needs {graph.name} and {description.name}); "
                            f"run `instacli export {path if path.is_dir() else 'RUN'} --format onnx` first")
    config, scaler = read_config(description)
    network = OnnxRuntimeNetwork(graph, Preprocess(**config.preprocess))
    return LoadedRun(path=graph, config=config, model=network, scaler=scaler)  # type: ignore[arg-type]


def sample_inputs(run: LoadedRun, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``n`` random decoded photos (uint8 squares), scaled engagement rows and caption embeddings for ``run``."""
    generator = torch.Generator().manual_seed(seed)
    size = run.preprocess.resize_size
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    features = torch.randn(n, len(run.scaler.features), generator=generator)
    text = torch.randn(n, run.config.text_dim, generator=generator) if run.config.text_dim else None
    return images, features, text


def max_differences(a: LoadedRun, b: LoadedRun, images: torch.Tensor, features: torch.Tensor, text: torch.Tensor | None) -> dict[str, float]:
    """The largest absolute difference between two runs' probabilities and log1p likes on a batch, in
    fp32, through predict's :func:`~instacli.ensemble.score_views` (NaN columns, absent heads, compare equal)."""
    with torch.inference_mode():
        (first,), (second,) = (score_views(run, images, features, text, "none") for run in (a, b))
    return {key: float(np.nan_to_num(np.abs(first[key] - second[key]), nan=0.0).max(initial=0.0)) for key in ("probs", "log_likes")}


@dataclass
class ExportSummary:
    graph: Path
    description: Path
    inputs: list[str]
    outputs: list[str]
    #: Largest differences from PyTorch on random photos, checked after the export.
    differences: dict[str, float]
    seconds: float


def _check_exportable(run: LoadedRun) -> None:
    """Refuse, before any work, a run whose network has a part that is not PyTorch."""
    if getattr(run.model.regressor, "fits_after_training", False):
        raise InstacliError(f"{run.path}: its likes regressor '{run.config.regressor}' is a scikit-learn estimator, which has no ONNX graph; "
                            "export a run trained with a neural regressor (conv1d, mlp, linear)")


def _write_graph(run: LoadedRun, network: ExportedGraph, given: dict[str, torch.Tensor], path: Path) -> None:
    """Trace ``network`` on the example inputs ``given`` (batch axis dynamic) and write its graph to ``path``."""
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")  # notes on axis names, not for users
            torch.onnx.export(
                network, (), str(path), kwargs=given, dynamo=True, external_data=False, verbose=False,
                input_names=network.inputs, output_names=network.outputs, dynamic_shapes={name: {0: batch} for name in given},
            )
    except Exception as exc:  # noqa: BLE001 — torch.export's errors are pages long
        raise InstacliError(f"{run.path}: encoder '{run.config.encoder}' could not be exported to ONNX "
                            f"({str(exc).strip().splitlines()[0]}); predict with PyTorch instead") from None


def export_onnx(run_path: Path | str, out: Path | str | None = None, overwrite: bool = False) -> ExportSummary:
    """Export the run at ``run_path`` to ``out`` (default ``RUN/model.onnx``) and its description
    beside it; both appear at once, and neither replaces an existing file unless ``overwrite``."""
    started = time.perf_counter()
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require_extra(module, EXTRA, "export")
    run = load_run(run_path)
    _check_exportable(run)
    graph = Path(out) if out is not None else Path(run_path) / DEFAULT_FILE
    description = description_path(graph)
    if graph.suffix != ".onnx":
        raise InstacliError(f"--out {graph}: give a file name ending in .onnx")
    if description.name == CONFIG and is_run(graph.parent):  # its description would take the run's own config's place
        raise InstacliError(f"--out {graph}: its description would replace the run's {CONFIG}; choose another name, e.g. {DEFAULT_FILE}")
    with output_lock(graph):
        for path, what in ((graph, "exported model"), (description, "exported model's description")):
            check_writable_target(path, overwrite, what)
        images, features, text = sample_inputs(run, 2)
        crop = images[..., : run.preprocess.image_size, : run.preprocess.image_size].float()
        given = {name: value for name, value in (("pixels", crop), ("features", features if run.scaler.features else None), ("text", text))
                 if value is not None}
        inputs = list(given)
        outputs = [name for name, present in zip(OUTPUTS, (run.model.classifier is not None, run.model.regressor is not None)) if present]
        with atomic_path(graph, overwrite) as tmp_graph, atomic_path(description, overwrite) as tmp_description:
            _write_graph(run, ExportedGraph(run.model, inputs, outputs).eval(), given, tmp_graph)
            tmp_description.write_text(json.dumps({**run.config.to_json(), "onnx": {
                "graph": graph.name, "resize_size": run.preprocess.resize_size, "torch": torch.__version__,
                "inputs": {name: INPUTS[name] for name in inputs}, "outputs": {name: OUTPUTS[name] for name in outputs}}}, indent=2) + "\n")
            exported = LoadedRun(path=graph, config=run.config, model=OnnxRuntimeNetwork(tmp_graph, run.preprocess), scaler=run.scaler)  # type: ignore[arg-type]
            differences = max_differences(run, exported, *sample_inputs(run, 4, seed=1))
            if max(differences.values()) > PARITY_LIMIT:
                raise InstacliError(f"{graph}: the exported graph answers unlike PyTorch (max difference {max(differences.values()):.2g}); "
                                    "nothing was written; predict with PyTorch and report this run's encoder")
    return ExportSummary(graph, description, inputs, outputs, differences, time.perf_counter() - started)
