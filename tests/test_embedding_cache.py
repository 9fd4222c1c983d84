"""Frozen-encoder runs: every step before the epochs is reported, the summary's time is the wall
time, and embeddings are cached on disk (keyed by data, split, encoder weights and preprocessing),
reused by a second run and rebuilt when the cache file is damaged."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from instacli import training_inputs
from instacli.embedding_cache import load_embeddings
from instacli.progress import Reporter
from instacli.settings import TrainSettings
from instacli.training import TrainResult, train
from tests.conftest import make_photo_tree

TINY_VIT = {"image_size": 32, "patch_size": 8, "width": 32, "heads": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("emb")
    build_dataset(make_photo_tree(root / "src", {"animal": 10, "landscape": 10}), root / "data", synthetic="seed")
    return root / "data"  # 14 train, 3 validation rows


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INSTACLI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Recorder(Reporter):
    """Keeps every stage with its total, advances and times, and when training finished."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []

    def stage_start(self, description: str, total: int | None) -> None:
        self.stages.append({"description": description, "total": total, "done": 0, "start": time.perf_counter()})

    def stage_advance(self, n: int) -> None:
        self.stages[-1]["done"] += n

    def stage_end(self) -> None:
        self.stages[-1]["end"] = time.perf_counter()

    def finish(self, summary: dict[str, Any]) -> None:
        self.finished = time.perf_counter()


def _train(data: Path, out: Path, reporter: Reporter | None = None, **overrides: Any) -> TrainResult:
    settings = TrainSettings(data=data, out=out, encoder_options=TINY_VIT, freeze_encoder=True, epochs=2, batch_size=8,
                             workers=0, **overrides)
    return train(settings, reporter)


def _history(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_every_step_is_reported_and_the_summary_counts_it(data: Path, tmp_path: Path, cache: Path) -> None:
    recorder = Recorder()
    started = time.perf_counter()
    result = _train(data, tmp_path / "run", recorder)
    names = [s["description"] for s in recorder.stages]
    assert names[0].startswith("reading ")
    assert names[1:] == ["decoding 14 train images", "embedding 14 train images (vit-scratch, frozen)",
                         "decoding 3 validation images", "embedding 3 validation images (vit-scratch, frozen)",
                         "calibrating on 3 validation images"]
    assert all(s["done"] == s["total"] and "end" in s for s in recorder.stages[1:])  # every counted step counted to its end
    # the summary's time is the run's wall time: reading, decoding and embedding included
    assert result.seconds >= recorder.finished - recorder.stages[0]["start"]
    assert result.seconds <= time.perf_counter() - started


def test_a_second_run_reuses_the_embeddings(data: Path, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _train(data, tmp_path / "a")
    assert len(list(cache.glob("embeddings-*.safetensors"))) == 2  # train and validation

    def no_embedding(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("embeddings were computed again")

    monkeypatch.setattr(training_inputs, "embed_images", no_embedding)
    recorder = Recorder()
    second = _train(data, tmp_path / "b", recorder)
    assert not any(s["description"].startswith(("decoding", "embedding")) for s in recorder.stages)  # no image decoded either
    assert [r["val_loss"] for r in _history(tmp_path / "b")] == [r["val_loss"] for r in _history(tmp_path / "a")]
    assert second.best == {**first.best, **{k: second.best[k] for k in ("seconds", "images_per_second", "elapsed")}}


def test_other_weights_get_their_own_embeddings(data: Path, tmp_path: Path, cache: Path) -> None:
    """A frozen randomly initialized encoder under another seed embeds differently: the key is the
    weights themselves, not the encoder's name."""
    _train(data, tmp_path / "a", seed=1)
    _train(data, tmp_path / "b", seed=2)
    assert len(list(cache.glob("embeddings-*.safetensors"))) == 4


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cache_file_is_detected_and_rebuilt(data: Path, tmp_path: Path, cache: Path, damage: str) -> None:
    _train(data, tmp_path / "a")
    path = max(cache.glob("embeddings-*.safetensors"), key=lambda p: p.stat().st_size)  # the training split's
    rows = load_embeddings(path, 14)
    assert rows is not None and rows.shape[0] == 14
    rows = rows.clone()  # the loaded tensor maps the file that is damaged next
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    else:
        raw[-5] ^= 0xFF  # one byte of the last embedding
        path.write_bytes(raw)
    assert load_embeddings(path, 14) is None
    recorder = Recorder()
    _train(data, tmp_path / "b", recorder)
    assert "embedding 14 train images (vit-scratch, frozen)" in [s["description"] for s in recorder.stages]
    rebuilt = load_embeddings(path, 14)
    assert rebuilt is not None and torch.equal(rebuilt, rows)
