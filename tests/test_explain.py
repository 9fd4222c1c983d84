"""``instacli explain`` (issue 11) is right, not just running: on photos whose class is a coloured square at
a random place, Grad-CAM's peak falls inside the square; where likes depend on comments alone,
comments get the largest attribution."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instacli.encoders import Preprocess
from instacli.explain import ATTRIBUTIONS_JSON, ATTRIBUTIONS_PNG, CATEGORY_DIR, INDEX, category_heatmaps
from instacli.decode_cache import decode_square
from instacli.model import load_run
from instacli.settings import TrainSettings
from instacli.training import train

#: A tiny vit-scratch with an 8×8 token grid (4-px patches), so that a 10-px square covers whole tokens.
ENCODER = {"image_size": 32, "patch_size": 4, "width": 32, "heads": 2, "depth": 2, "drop_path": 0.0}
SQUARE = 10
#: Photos are drawn at the decode size, so that the model's view is their center crop, pixel for pixel.
SIDE = Preprocess(image_size=ENCODER["image_size"]).resize_size
OFFSET = (SIDE - ENCODER["image_size"]) // 2
COLOURS = {"animal": (220, 30, 30), "landscape": (30, 30, 220)}


def square_photos(folder: Path, n: int, seed: int) -> dict[Path, tuple[int, int]]:
    """``n`` grey-noise photos, each with a red (animal) or blue (landscape) square somewhere inside the
    model's view; the square's top-left corner in that view, by file."""
    rng = np.random.default_rng(seed)
    corners = {}
    for i in range(n):
        category = list(COLOURS)[i % 2]
        pixels = rng.integers(60, 180, (SIDE, SIDE, 1)).repeat(3, axis=2).astype(np.uint8)
        x, y = rng.integers(OFFSET, OFFSET + ENCODER["image_size"] - SQUARE + 1, 2)
        pixels[y : y + SQUARE, x : x + SQUARE] = COLOURS[category]
        path = folder / category / f"{category}_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        corners[path] = (int(x) - OFFSET, int(y) - OFFSET)
    return corners


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, dataset): the class is the square's colour; likes are 20 × comments, whatever the photo, shares or followers."""
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("explain")
    photos = square_photos(root / "photos", 96, seed=0)
    rng = np.random.default_rng(1)
    lines = ["file_name,likes,comments,shares,followers"]
    for path in photos:
        comments, shares, followers = rng.lognormal(4, 1.5), rng.lognormal(4, 1.5), rng.lognormal(8, 1.5)
        lines.append(f"{path.relative_to(root / 'photos').as_posix()},{round(20 * comments)},{round(comments)},{round(shares)},{round(followers)}")
    (root / "engagement.csv").write_text("\n".join(lines) + "\n")
    build_dataset(root / "photos", root / "data", engagement=root / "engagement.csv", val_fraction=0.2, test_fraction=0.2, workers=1)
    train(TrainSettings(data=root / "data", out=root / "run", encoder_options=ENCODER, epochs=6, batch_size=16, workers=0))
    return root / "run", root / "data"


def test_heatmap_peaks_inside_the_square_that_decides_the_class(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run = load_run(trained[0])
    corners = square_photos(tmp_path / "new", 40, seed=2)
    images = torch.stack([torch.from_numpy(decode_square(path, run.preprocess.resize_size)) for path in corners])
    maps, predicted = category_heatmaps(run, images)
    assert maps.shape == (40, 32, 32)
    right = [run.config.class_names[c] == path.parent.name for c, path in zip(predicted, corners)]
    assert np.mean(right) >= 0.9  # it learned the task, so there is something to explain
    inside = []
    for heatmap, (x, y) in zip(maps, corners.values()):
        row, column = np.unravel_index(heatmap.argmax(), heatmap.shape)
        inside.append(x <= column < x + SQUARE and y <= row < y + SQUARE)
    assert np.mean(inside) >= 0.9, np.mean(inside)


def test_comments_get_the_largest_attribution_when_likes_depend_on_comments_alone(trained: tuple[Path, Path], tmp_path: Path,
                                                                                  run_cli) -> None:
    out = tmp_path / "why"
    result = run_cli("explain", trained[0], "--data", trained[1], "--split", "test", "--out", out)
    assert result.code == 0, result.stderr
    report = json.loads((out / ATTRIBUTIONS_JSON).read_text())
    assert set(report["mean_abs"]) == {"photo", "comments", "shares", "followers"}
    assert max(report["mean_abs"], key=report["mean_abs"].get) == "comments", report["mean_abs"]
    for photo in report["per_photo"]:  # the groups and the baseline add up to the prediction (integrated gradients' completeness)
        assert sum(photo["attributions"].values()) + photo["baseline_log_likes"] == pytest.approx(photo["log_likes"], abs=0.05)
    assert (out / ATTRIBUTIONS_PNG).is_file() and len(report["per_photo"]) == report["photos"] > 0


def test_explain_a_folder_writes_a_heatmap_per_photo_and_one_page(trained: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    photos = tmp_path / "photos"
    square_photos(photos, 4, seed=3)
    (photos / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "why"
    result = run_cli("explain", trained[0], photos, "--out", out)
    assert result.code == 0, result.stderr
    pngs = sorted(p.name for p in (out / CATEGORY_DIR).iterdir())
    assert pngs == ["animal__animal_000.png", "animal__animal_002.png", "landscape__landscape_001.png", "landscape__landscape_003.png"]
    page = (out / INDEX).read_text()
    assert all(f"{CATEGORY_DIR}/{name}" in page for name in pngs) and "broken.jpg" in page and ATTRIBUTIONS_PNG in page
    assert Image.open(out / CATEGORY_DIR / pngs[0]).size[0] > Image.open(out / CATEGORY_DIR / pngs[0]).size[1]  # photo | heatmap

    result = run_cli("explain", trained[0], photos, "--out", out)
    assert result.code == 2 and "already exists; pass --overwrite" in result.stderr


def test_every_heatmap_link_of_the_page_opens_its_file(trained: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    """A photo named `50% off #1?.png` was linked as `category/50% off #1?.png`: a browser reads `#` as a
    fragment and `?` as a query, so the page showed a broken image."""
    import re
    from urllib.parse import unquote, urlsplit

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 40), COLOURS["animal"]).save(photos / "50% off #1?.png")
    result = run_cli("explain", trained[0], photos, "--out", tmp_path / "why")
    assert result.code == 0, result.stderr
    links = [html.unescape(src) for src in re.findall(r"<img src='([^']*)'", (tmp_path / "why" / INDEX).read_text())]
    heatmaps = [link for link in links if link.startswith(f"{CATEGORY_DIR}/")]
    assert len(heatmaps) == 1 and (tmp_path / "why" / unquote(urlsplit(heatmaps[0]).path)).is_file(), heatmaps


@pytest.mark.parametrize(("args", "message"), [
    (["{photos}", "--data", "{photos}"], "give either a folder of PHOTOS or --data DATA"),
    ([], "give either a folder of PHOTOS or --data DATA"),
    (["{photos}/nowhere"], "not a folder; pass the folder of photos to explain"),
])
def test_bad_explain_arguments_are_one_line_errors(trained: tuple[Path, Path], tmp_path: Path, run_cli, args: list[str], message: str) -> None:
    result = run_cli("explain", trained[0], *(a.format(photos=tmp_path) for a in args), "--out", tmp_path / "why")
    assert result.code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "why").exists()


def test_missing_explain_extra_is_one_line_naming_it(trained: tuple[Path, Path], tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    square_photos(tmp_path / "photos", 2, seed=4)
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # what an install without the extra looks like to import
    result = run_cli("explain", trained[0], tmp_path / "photos", "--out", tmp_path / "why")
    assert result.code == 2 and "pip install 'instacli[explain]'" in result.stderr and not (tmp_path / "why").exists()


def test_heatmap_file_names_have_no_control_character_or_leading_dash() -> None:
    """A photo named ``-rf\\n.jpg`` gave ``category/-rf\\n.png``: a name a shell reads as an option, over two lines."""
    from instacli.explain import _png_name

    taken: set[str] = set()
    assert [_png_name(name, taken) for name in ("-rf\n.jpg", "a/\tb.jpg", "-rf\n.png", "ok.jpg")] == ["_rf_.png", "a___b.png", "_rf_-2.png", "ok.png"]
