"""Captions as a third input: on data where likes depend on the caption only, --text must cut the error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instacli.evaluation import evaluate
from instacli.prediction import predict_folder
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import TINY_VIT, make_photo_tree

CAPTIONS = {True: "this post went viral, everyone loved and shared it", False: "a quiet ordinary afternoon, nothing special"}


@pytest.fixture(scope="module")
def caption_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """80 photos; likes ≈ 100k for 'viral' captions and ≈ 1k otherwise, independent of photo and numbers."""
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("captions")
    src = make_photo_tree(root / "src", {"animal": 40, "landscape": 40})
    rng = np.random.default_rng(0)
    lines = ["file_name,likes,comments,shares,caption"]
    for path in sorted(src.rglob("*.jpg")):
        viral = bool(rng.integers(0, 2))
        likes = int(rng.lognormal(np.log(100_000 if viral else 1_000), 0.2))
        lines.append(f'{path.relative_to(src).as_posix()},{likes},{rng.integers(1, 100)},{rng.integers(1, 100)},"{CAPTIONS[viral]}"')
    table = root / "engagement.csv"
    table.write_text("\n".join(lines) + "\n")
    out = root / "data"
    build_dataset(src, out, engagement=table, seed=0, val_fraction=0.2, test_fraction=0.25)
    return out, table


def _train(data: Path, out: Path, text: bool) -> dict:
    settings = TrainSettings(
        data=data, out=out, encoder_options=TINY_VIT, freeze_encoder=True, epochs=25, batch_size=16,
        lr=5e-3, warmup_epochs=1, patience=25, text=text,
    )
    train(settings)
    return evaluate(out, data)


def test_captions_improve_likes_error(caption_data: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    data, table = caption_data
    without = _train(data, tmp_path / "no-text", text=False)
    with_text = _train(data, tmp_path / "text", text=True)
    config = json.loads((tmp_path / "text" / "config.json").read_text())
    assert config["text_encoder"] == "minilm" and config["text_dim"] == 384
    assert without["log_likes_mae"] > 1.5  # the photo and numbers carry no signal
    assert with_text["log_likes_mae"] < 0.5 * without["log_likes_mae"]

    # predict reads captions from --metadata: viral captions get far more likes
    folder = data.parent / "src"
    summary = predict_folder(tmp_path / "text", folder, tmp_path / "p.jsonl", metadata=table, workers=0)
    assert summary.scored == 80 and summary.without_caption == 0
    rows = {r["file"]: r for r in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    viral = [line.split(",")[0] for line in table.read_text().splitlines()[1:] if "viral" in line]
    quiet = [f for f in rows if f not in viral]
    assert np.median([rows[f]["likes"] for f in viral]) > 10 * np.median([rows[f]["likes"] for f in quiet])

    # a caption model given no captions says so, once
    result = run_cli("predict", tmp_path / "text", folder, "--out", tmp_path / "q.csv", "--workers", "0")
    assert result.code == 0 and result.stdout.count("80 photo(s) had no caption") == 1, result.stdout


def test_text_needs_captions(tmp_path: Path) -> None:
    from instacli.errors import InstacliError
    from instacli_datasets import build_dataset

    src = make_photo_tree(tmp_path / "src")
    build_dataset(src, tmp_path / "d", synthetic="seed")
    with pytest.raises(InstacliError, match="caption"):
        train(TrainSettings(data=tmp_path / "d", out=tmp_path / "r", encoder_options=TINY_VIT, epochs=1, text=True))
