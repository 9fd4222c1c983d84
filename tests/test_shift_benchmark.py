"""The shift benchmark's quick version, end to end on posts-dev (slow: about 2 minutes on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POSTS_DEV = Path(os.environ.get("INSTACLI_POSTS_DEV", ROOT.parent / "shared" / "data" / "posts-dev"))
TINY = "--epochs 1 -E image_size=32 -E patch_size=8 -E width=32 -E heads=2"


def _shift(tmp_path: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "shift.py"), "--quick", "--encoders", "vit-scratch", "--extra", TINY,
         "--src", str(POSTS_DEV), "--cache", str(tmp_path / "work"), "--out", str(out), *flags],
        capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )


@pytest.mark.slow
@pytest.mark.skipif(not POSTS_DEV.is_dir(), reason=f"needs posts-dev at {POSTS_DEV} (or INSTACLI_POSTS_DEV)")
def test_quick_shift_benchmark_holds_out_every_source_once(tmp_path: Path) -> None:
    out = tmp_path / "shift.json"
    done = _shift(tmp_path, out)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    folds = result["folds"]
    assert len(folds) == 2 and len({s for f in folds for s in f}) == 12 and sorted(s for f in folds for s in f) == sorted(set(s for f in folds for s in f)), "each source once"
    assert all(sum(s.startswith("intel-") for s in f) == 2 and sum(not s.startswith("intel-") for s in f) == 4 for f in folds)
    rows = result["results"]
    assert [r["fold"] for r in rows] == [1, 2] and all(r["extra_train_flags"] == TINY.split() for r in rows)
    for row, held in zip(rows, folds):
        assert set(row["per_source"]) == set(held) and all(v["n"] == 40 for v in row["per_source"].values())
        assert row["shift_n"] == 40 * len(held)
        pooled = sum(v["accuracy"] * v["n"] for v in row["per_source"].values()) / row["shift_n"]
        assert pooled == pytest.approx(row["shift_accuracy"])
        assert row["drop"] == pytest.approx(row["test_accuracy"] - row["shift_accuracy"]) and row["train_seconds"] > 0
    assert "| shift acc |" in done.stdout and "extra train flags `--epochs 1" in done.stdout

    # --only-fold 2 reuses the cached run of fold 2 and reports that fold alone
    alone = _shift(tmp_path, tmp_path / "fold2.json", "--only-fold", "2")
    assert alone.returncode == 0, alone.stderr[-3000:]
    (row,) = json.loads((tmp_path / "fold2.json").read_text())["results"]
    assert row["fold"] == 2 and row["shift_accuracy"] == rows[1]["shift_accuracy"]
    assert not any(source in alone.stdout for source in folds[0]), "fold 1's sources are not in the tables"


@pytest.mark.skipif(not POSTS_DEV.is_dir(), reason=f"needs posts-dev at {POSTS_DEV} (or INSTACLI_POSTS_DEV)")
def test_only_fold_out_of_range_is_refused_before_any_training(tmp_path: Path) -> None:
    done = _shift(tmp_path, tmp_path / "shift.json", "--only-fold", "3")
    assert done.returncode == 1 and "--only-fold 3: must be between 1 and --folds (2)" in done.stderr
    assert not (tmp_path / "work" / "runs").exists()


def test_unlabelled_share_gives_that_share_of_each_held_out_source_unlabelled(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import shift

    src = tmp_path / "src"
    for category, source in (("animal", "pets-cats"), ("animal", "wild-fox"), ("landscape", "intel-sea")):
        (src / category).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            (src / category / f"{source}_{i}.jpg").write_bytes(b"x")
    labelled, unlabelled = shift.unlabelled_split(src, tmp_path / "split", ["wild-fox", "intel-sea"], 0.5)
    given = sorted(p.name for p in unlabelled.iterdir())
    kept = sorted(p.relative_to(labelled).as_posix() for p in labelled.rglob("*.jpg"))
    assert given == sorted(f"{s}_{i}.jpg" for s in ("wild-fox", "intel-sea") for i in (1, 3, 5, 7, 9))  # every other one, flat
    assert kept == sorted([f"animal/pets-cats_{i}.jpg" for i in range(10)] + [f"animal/wild-fox_{i}.jpg" for i in (0, 2, 4, 6, 8)]
                          + [f"landscape/intel-sea_{i}.jpg" for i in (0, 2, 4, 6, 8)])
