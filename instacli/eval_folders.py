"""Where ``instacli evaluate`` writes inside a run: one complete, self-describing folder per data + split.

::

    RUN/eval/<data name>-<split>/    metrics.json, confusion_matrix.png, reliability.png, likes.png (those that apply)
    RUN/eval/<folder name>-folder/   the same for a plain photo folder (every photo in it; no split)
    RUN/eval/<data name>-<split>-tta-flip/   the same with test-time augmentation (``evaluate --tta``)

An evaluation replaces its own folder as a whole (written beside it, then renamed into place), so
the files in a folder always come from one evaluation, and evaluations of other data or splits stay
as they were. (A single ``RUN/eval/`` once mixed a new metrics.json with an older split's likes.png.)
Kept free of torch: the report reads these folders without loading a model.
"""

from __future__ import annotations

from pathlib import Path

EVAL_DIR = "eval"
METRICS = "metrics.json"
#: Figure files of an evaluation, by the name the report gives them.
FIGURES = {"confusion": "confusion_matrix.png", "reliability": "reliability.png", "likes": "likes.png"}
#: Stands for the split of a plain photo folder, which is evaluated whole.
PLAIN_FOLDER = "folder"


def eval_folder(run: Path, data: Path | str, split: str | None, tta: str = "none") -> Path:
    """The folder of ``run``'s evaluation on ``split`` of ``data`` (``None``: a plain photo folder);
    one with test-time augmentation has its own (``…-tta-flip``), beside the plain one it is compared with."""
    suffix = "" if tta == "none" else f"-tta-{tta}"
    return Path(run) / EVAL_DIR / f"{Path(data).resolve().name}-{split or PLAIN_FOLDER}{suffix}"


def subset(split: str | None) -> str:
    """What was evaluated, in words: ``test split`` or ``plain folder``."""
    return f"{split} split" if split else "plain folder, every photo"


def evaluation_title(data: Path | str, split: str | None, n: int) -> str:
    """``posts (test split, n=124)``: the data, split and size a figure shows."""
    return f"{Path(data).resolve().name} ({subset(split)}, n={n})"


def latest_evaluation(run: Path) -> Path | None:
    """The folder of ``run``'s most recent evaluation (a run folder from before these sub-folders
    has its files directly in ``eval/``); None when never evaluated."""
    found = list((Path(run) / EVAL_DIR).glob(f"*/{METRICS}")) + list((Path(run) / EVAL_DIR).glob(METRICS))
    return max(found, key=lambda p: p.stat().st_mtime).parent if found else None


def figures(folder: Path) -> dict[str, Path]:
    """The figures an evaluation folder holds, by the report's names for them."""
    return {key: folder / name for key, name in FIGURES.items() if (folder / name).is_file()}
