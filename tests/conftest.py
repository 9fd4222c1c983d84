"""Shared test helpers: tiny generated photo folders and an in-process CLI runner.

Photos are made with PIL at a few pixels, so a whole folder costs milliseconds and no test needs
the network or ../shared data.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from instacli.progress import Reporter

# Tests never touch the network, and never write the user's decode cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["INSTACLI_CACHE"] = tempfile.mkdtemp(prefix="instacli-test-cache-")
atexit.register(shutil.rmtree, os.environ["INSTACLI_CACHE"], ignore_errors=True)  # each run's decode caches, gone with it

#: Tiny options for every built-in encoder, so that tests can build each of them in seconds;
#: tests parametrized over ``registry.encoders.names()`` read them (a new built-in needs an entry).
TINY_ENCODER_OPTIONS: dict[str, dict[str, object]] = {
    "vit-scratch": {"image_size": 32, "patch_size": 8, "width": 32, "heads": 2, "drop_path": 0.0},
    "hf-vit": {"image_size": 32, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "inception-v3": {"image_size": 75},  # the smallest input its stride-2 stem and pools accept
    "efficientnet-lite0": {"image_size": 64},  # the bundled ImageNet weights, smaller input
}
#: The tiny vit-scratch most tests train.
TINY_VIT = TINY_ENCODER_OPTIONS["vit-scratch"]
#: Where the tiny transformers checkpoints of :data:`PREFIXED_EXAMPLES` are saved, on first use.
TINY_HF_DIR = Path(tempfile.mkdtemp(prefix="instacli-test-hf-"))
#: A tiny example of every encoder prefix (``timm:``, ``hf:``) with its options: tests parametrized
#: over :func:`every_encoder` train, export and rebuild these beside the named encoders. The
#: ``hf:`` ones are local folders (:func:`save_tiny_hf`): nothing is downloaded.
PREFIXED_EXAMPLES: dict[str, dict[str, object]] = {
    "timm:test_resnet": {"image_size": 32},  # timm's 0.4M-parameter test model
    f"hf:{TINY_HF_DIR}/vit": {"image_size": 32},
    f"hf:{TINY_HF_DIR}/convnext": {"image_size": 32},
}


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Test ids name the tiny transformers folders ``hf:tiny/vit``, the same in every session."""
    return val.replace(str(TINY_HF_DIR), "tiny") if isinstance(val, str) and str(TINY_HF_DIR) in val else None


def every_encoder() -> list[str]:
    """Every registered encoder name, then one example per prefix (:data:`PREFIXED_EXAMPLES`)."""
    from instacli import registry

    return registry.encoders.names() + list(PREFIXED_EXAMPLES)


def save_tiny_hf(folder: Path) -> Path:
    """A tiny transformers ``vit`` or ``convnext`` (by the folder's name) saved with ``save_pretrained``,
    with an image processor of its own mean and std beside it, unless already there; returns ``folder``."""
    from transformers import AutoModel, ConvNextConfig, ConvNextImageProcessor, ViTConfig, ViTImageProcessor

    if (folder / "config.json").is_file():
        return folder
    if folder.name == "vit":
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4])
    else:
        config = ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1])
        processor = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.8, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4])
    AutoModel.from_config(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_options(encoder: str) -> dict[str, object]:
    """:data:`TINY_ENCODER_OPTIONS` (or :data:`PREFIXED_EXAMPLES`) of ``encoder``; a registered encoder
    without an entry fails the test that asks."""
    if encoder in PREFIXED_EXAMPLES:
        if encoder.startswith("hf:"):
            save_tiny_hf(Path(encoder.removeprefix("hf:")))
        return PREFIXED_EXAMPLES[encoder]
    if encoder not in TINY_ENCODER_OPTIONS:
        raise AssertionError(f"encoder '{encoder}' is registered but has no tiny options in tests/conftest.py: add them so it is tested")
    return TINY_ENCODER_OPTIONS[encoder]


DEFAULT_CLASSES = {"animal": 10, "landscape": 10}


def make_photo(
    path: Path,
    size: tuple[int, int] = (32, 24),
    color: tuple[int, int, int] = (200, 40, 40),
    *,
    fmt: str | None = None,
    mode: str = "RGB",
    exif_orientation: int | None = None,
) -> Path:
    """Write a solid-colour image (format from the suffix unless ``fmt``); the left quarter is black
    so that rotations are visible. ``exif_orientation`` sets the EXIF Orientation tag (JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    image.paste((0, 0, 0), (0, 0, max(1, size[0] // 4), size[1]))
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(Image.new("L", size, 0))
    elif mode != "RGB":
        image = image.convert(mode)
    extra = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        extra["exif"] = exif.tobytes()
    image.save(path, format=fmt, **extra)
    return path


def make_photo_tree(root: Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (32, 24)) -> Path:
    """``root/<category>/<category>_<i>.jpg`` with a distinct colour per photo; returns ``root``."""
    for c, (category, n) in enumerate((counts or DEFAULT_CLASSES).items()):
        for i in range(n):
            make_photo(root / category / f"{category}_{i:02d}.jpg", size, ((i * 23) % 256, (i * 71 + 40) % 256, (c * 97) % 256))
    return root


def photo_dataset(tmp_path_factory: pytest.TempPathFactory, counts: dict[str, int]) -> tuple[Path, Path]:
    """A tree of ``counts`` generated photos (:func:`make_photo_tree`) and the dataset built from it with
    seed-generated likes, a quarter each for validation and test; returns (photos, dataset)."""
    from instacli_datasets import build_dataset

    photos = make_photo_tree(tmp_path_factory.mktemp("photos"), counts)
    out = tmp_path_factory.mktemp("data") / "ds"
    build_dataset(photos, out, synthetic="seed", seed=3, val_fraction=0.25, test_fraction=0.25, workers=1)
    return photos, out


def built_rows(out: Path) -> dict[str, dict]:
    """Every row of a dataset built into ``out`` (images dropped, ``split`` added), by file name."""
    from datasets import DatasetDict

    dd = DatasetDict.load_from_disk(str(out))
    return {r["file_name"]: r | {"split": split} for split, ds in dd.items() for r in ds.remove_columns("image")}


def two_colour_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 + 20 noisy two-colour photos (grey over brown, blue over green) that a tiny ViT learns to tell
    apart in a few epochs, built with seed-generated likes (24 train, 8 validation, 8 test); returns the dataset."""
    import numpy as np

    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c, category in enumerate(("animal", "landscape")):
        (root / category).mkdir()
        for i in range(20):
            img = np.zeros((40, 48, 3), np.uint8)
            img[:20], img[20:] = ((90, 150, 230), (60, 160, 70)) if c else ((128, 128, 128), (120, 70, 30))
            img = np.clip(img + rng.integers(-25, 25, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / category / f"{category}_{i:02d}.png")
    out = tmp_path_factory.mktemp("data") / "ds"
    build_dataset(root, out, synthetic="seed", seed=1, val_fraction=0.2, test_fraction=0.2)
    return out


@pytest.fixture
def photo_tree(tmp_path: Path) -> Path:
    """Two categories (animal, landscape) of 10 tiny JPEGs each."""
    return make_photo_tree(tmp_path / "src")


class Crash(Exception):
    """Raised by :class:`CrashAt`: a training that dies mid-run."""


class CrashAt(Reporter):
    """Raises after ``at`` batches: the process dies with whatever checkpoint it last wrote."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def step(self, epoch: int, loss: float) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise Crash


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run ``instacli ARGS...`` in-process through the real entry point (exit code and one-line errors
    included), faster than a subprocess."""
    from instacli.cli.main import main

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["instacli", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
