"""``instacli export --format onnx`` and ``predict --backend onnxruntime`` (issue 11): the exported graph
answers as the PyTorch network does, for every built-in encoder and prefix example, through predict's own code."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instacli.export import DEFAULT_FILE, description_path, load_exported, max_differences
from instacli.decode_cache import decode_square
from instacli.model import load_run
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import TINY_HF_DIR, every_encoder, photo_dataset, tiny_options

#: The issue's bound on the differences between PyTorch and onnxruntime, in fp32.
TOLERANCE = 1e-4


def _noise_photos(folder: Path, n: int) -> list[Path]:
    """Photos with structure at every scale (noise over a gradient, a bright square), unlike any training photo."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        ramp = np.linspace(0, 255, 96)[None, :, None] * rng.uniform(0, 1, 3)
        pixels = np.clip(ramp + rng.normal(0, 40, (80, 96, 3)), 0, 255)
        x, y = rng.integers(0, 60, 2)
        pixels[y : y + 20, x : x + 20] = rng.uniform(0, 255, 3)
        paths.append(folder / f"noise_{i}.png")
        Image.fromarray(pixels.astype(np.uint8)).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(photos, the dataset built from them)."""
    return photo_dataset(tmp_path_factory, {"animal": 6, "landscape": 6})


def _train(data: Path, out: Path, encoder: str = "vit-scratch", **settings: object) -> Path:
    train(TrainSettings(data=data, out=out, encoder=encoder, encoder_options=tiny_options(encoder), epochs=1, batch_size=4, workers=0,
                        **settings))
    return out


@pytest.fixture(scope="module")
def vit_run(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(data[1], tmp_path_factory.mktemp("vit") / "run")


#: Encoders whose export takes minutes on 2 cores (torch's dynamo exporter on Inception's 300 operators), or whose
#: graph another case already exports (the tiny hf: ViT is hf-vit's ViTModel): slow-marked, still run by `pytest -m slow`.
SLOW_EXPORTS = {"inception-v3", f"hf:{TINY_HF_DIR}/vit"}


@pytest.mark.parametrize("encoder", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_EXPORTS else name
                                     for name in every_encoder()])
def test_onnxruntime_gives_pytorchs_probabilities_and_likes(encoder: str, data: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    run = _train(data[1], tmp_path / "run", encoder)
    result = run_cli("export", run, "--format", "onnx")
    assert result.code == 0, result.stderr
    graph = run / DEFAULT_FILE
    description = json.loads(description_path(graph).read_text())
    # everything predict needs around the graph: preprocessing, scaler and likes transform, classes
    assert description["preprocess"]["image_size"] == tiny_options(encoder)["image_size"] and len(description["preprocess"]["mean"]) == 3
    assert description["scaler"]["features"] and {"medians", "mean", "std", "target_mean", "target_std"} <= set(description["scaler"])
    assert description["class_names"] == ["animal", "landscape"] and set(description["onnx"]["inputs"]) == {"pixels", "features"}

    pytorch, exported = load_run(run), load_exported(run)
    photos = _noise_photos(tmp_path / "noise", 5) + sorted(data[0].rglob("*.jpg"))[:4]  # 9 photos: not the batch of 2 it was traced with
    images = torch.stack([torch.from_numpy(decode_square(p, pytorch.preprocess.resize_size)) for p in photos])
    features = torch.randn(len(photos), len(pytorch.scaler.features), generator=torch.Generator().manual_seed(0))
    differences = max_differences(pytorch, exported, images, features, None)
    assert differences["probs"] <= TOLERANCE and differences["log_likes"] <= TOLERANCE, differences


def test_a_run_that_reads_captions_exports_with_a_text_input(data: tuple[Path, Path], tmp_path: Path) -> None:
    from instacli.export import export_onnx
    from instacli_datasets import build_dataset

    photos = data[0]
    lines = ["file_name,likes,comments,caption"] + [f"{p.relative_to(photos).as_posix()},{10 * i + 1},{i},\"post {i}\""
                                                   for i, p in enumerate(sorted(photos.rglob("*.jpg")))]
    (tmp_path / "engagement.csv").write_text("\n".join(lines) + "\n")
    build_dataset(photos, tmp_path / "data", engagement=tmp_path / "engagement.csv", val_fraction=0.25, test_fraction=0.25, workers=1)
    run = _train(tmp_path / "data", tmp_path / "run", text=True)
    summary = export_onnx(run)
    assert summary.inputs == ["pixels", "features", "text"] and max(summary.differences.values()) <= TOLERANCE
    pytorch, exported = load_run(run), load_exported(run)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (7, 3, pytorch.preprocess.resize_size, pytorch.preprocess.resize_size), dtype=torch.uint8, generator=generator)
    text = torch.randn(7, pytorch.config.text_dim, generator=generator)
    differences = max_differences(pytorch, exported, images, torch.randn(7, 1, generator=generator), text)
    assert differences["probs"] <= TOLERANCE and differences["log_likes"] <= TOLERANCE, differences


def test_predict_with_onnxruntime_writes_pytorchs_rows(vit_run: Path, data: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    graph = tmp_path / "exported" / "vit.onnx"
    assert run_cli("export", vit_run, "--out", graph).code == 0
    rows = {}
    for name, args in {"pytorch": [vit_run], "onnx-file": [graph, "--backend", "onnxruntime"]}.items():
        out = tmp_path / f"{name}.csv"
        result = run_cli("predict", *args, data[0], "--out", out, "--workers", "0")
        assert result.code == 0, result.stderr
        with out.open(newline="") as handle:
            rows[name] = {r["file"]: r for r in csv.DictReader(handle)}
    assert rows["pytorch"].keys() == rows["onnx-file"].keys() and len(rows["pytorch"]) == 12
    for file, expected in rows["pytorch"].items():
        got = rows["onnx-file"][file]
        assert got["label"] == expected["label"] and not got["error"]
        assert abs(float(got["prob_animal"]) - float(expected["prob_animal"])) <= TOLERANCE
        assert abs(int(got["likes"]) - int(expected["likes"])) <= 1  # counts, rounded from log-likes within 1e-4


def test_export_never_overwrites_and_predict_asks_for_an_export(vit_run: Path, data: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    result = run_cli("predict", vit_run, data[0], "--out", tmp_path / "p.csv", "--backend", "onnxruntime")
    assert result.code == 2 and f"run `instacli export {vit_run} --format onnx` first" in result.stderr and "Traceback" not in result.stderr
    graph = tmp_path / "m.onnx"
    assert run_cli("export", vit_run, "--out", graph).code == 0
    before = graph.read_bytes()
    result = run_cli("export", vit_run, "--out", graph)
    assert result.code == 2 and "already exists; pass --overwrite" in result.stderr and graph.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]  # no temp files left beside them
    config = (vit_run / "config.json").read_bytes()
    result = run_cli("export", vit_run, "--out", vit_run / "config.onnx", "--overwrite")
    assert result.code == 2 and "would replace the run's config.json" in result.stderr and (vit_run / "config.json").read_bytes() == config


def test_a_scikit_learn_regressor_cannot_be_exported(data: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    run = _train(data[1], tmp_path / "ridge", regressor="ridge")
    result = run_cli("export", run)
    assert result.code == 2 and "likes regressor 'ridge' is a scikit-learn estimator" in result.stderr
    assert not (run / DEFAULT_FILE).exists()


def test_missing_export_extra_is_one_line_naming_it(vit_run: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # what an install without the extra looks like to import
    result = run_cli("export", vit_run)
    assert result.code == 2 and "pip install 'instacli[export]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
