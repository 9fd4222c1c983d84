"""Shift benchmark: how well a model does on photos from sources its training set never showed.

A model's own random test split flatters it: its test photos come from the same sources (the same
photographers, species, scenes) as its training photos. Here every fold holds out whole sources of
posts-dev (file names ``<source>_<n>.jpg``): the sources of each category, sorted, are dealt in turn
into the folds, so with the default 2 folds each fold holds out 2 landscape and 4 animal sources and
every source is held out exactly once. Per fold and encoder it runs the real CLI as a user would,
with its defaults::

    instacli data build SRC --out D --synthetic-engagement seed --group-pattern PATTERN --holdout S1,S2,…
    instacli train --data D --encoder E --out R [EXTRA]
    instacli evaluate R --data D --split test --json      # in-distribution test
    instacli evaluate R --data D --split holdout --json   # shift test, with the accuracy per held-out source

and prints, per encoder and recipe, the in-distribution test accuracy, the shift (holdout) accuracy
and macro F1, the drop between them, the accuracy on each held-out source and the training wall time
(a markdown table), and writes them all to ``--out`` (JSON). Datasets are built once per fold and
shared by the encoders; ``--cache`` keeps them, and the finished runs, for the next invocation.

    python benchmarks/shift.py --encoders efficientnet-lite0 --extra "--freeze-encoder" --cache /tmp/shift
    nice python benchmarks/shift.py --encoders vit-scratch --cache /tmp/shift
    python benchmarks/shift.py --quick                # 40 photos per source, 2 epochs (minutes)
    python benchmarks/shift.py --encoders vit-scratch --only-fold 1 --cache /tmp/shift   # one fold's runs
    python benchmarks/shift.py --encoders vit-scratch --extra "--distill-from efficientnet-lite0" --unlabelled-share 0.5 --cache /tmp/shift   # half of each held-out source given unlabelled
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

#: posts-dev file names start with their source, e.g. ``intel-glacier_12.jpg``, ``wild-fox_fox_0001.jpg``.
PATTERN = r"^([a-z]+-[a-z]+)_"
QUICK_PER_SOURCE = 40
QUICK_EXTRA = "--epochs 2"


def source_of(photo_name: str) -> str | None:
    match = re.match(PATTERN, photo_name)
    return match.group(1) if match else None


def sources_by_category(src: Path) -> dict[str, list[str]]:
    """Category folder → its sources (sorted), read from the file names."""
    found: dict[str, set[str]] = defaultdict(set)
    for photo in common.photos(src):
        source = source_of(photo.name)
        if source is None:
            sys.exit(f"{photo}: file name does not start with a source ({PATTERN}); the shift benchmark needs posts-dev's names")
        found[photo.parent.name].add(source)
    return {category: sorted(found[category]) for category in sorted(found)}


def make_folds(by_category: dict[str, list[str]], n_folds: int) -> list[list[str]]:
    """Held-out sources of each fold: each category's sorted sources dealt in turn (source i → fold i mod n)."""
    fewest = min(len(s) for s in by_category.values())
    if not 2 <= n_folds <= fewest:
        sys.exit(f"--folds {n_folds}: must be between 2 and {fewest} (the fewest sources of a category), so every fold trains on each category")
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for sources in by_category.values():
        for i, source in enumerate(sources):
            folds[i % n_folds].append(source)
    return folds


def linked_once(src: Path, dest: Path, place: Callable[[Path, int], str | None]) -> Path:
    """``dest`` with a symlink to each photo of ``src`` at ``place(photo, n)`` (a path under ``dest``,
    or None to leave it out; ``n``: the photo's count within its source, from 1), made once and whole."""
    if dest.is_dir():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted invocation
    seen: dict[str | None, int] = defaultdict(int)
    for photo in common.photos(src):
        seen[source_of(photo.name)] += 1
        if (where := place(photo, seen[source_of(photo.name)])) is not None:
            (tmp / where).parent.mkdir(parents=True, exist_ok=True)
            (tmp / where).symlink_to(photo.resolve())
    tmp.rename(dest)
    return dest


def quick_subset(src: Path, dest: Path, per_source: int) -> Path:
    """``dest/<category>/`` with symlinks to the first ``per_source`` photos of every source of ``src`` (made once)."""
    return linked_once(src, dest, lambda photo, n: f"{photo.parent.name}/{photo.name}" if n <= per_source else None)


def unlabelled_split(src: Path, dest: Path, holdout: list[str], share: float) -> tuple[Path, Path]:
    """(photo folder to build from, folder of unlabelled photos): ``share`` of each held-out source's
    photos (dealt in turn) go, without their category folder, to the second; the rest stay (symlinks, made once)."""

    def place(photo: Path, n: int) -> str:
        given = source_of(photo.name) in holdout and int(n * share) > int((n - 1) * share)
        return f"unlabelled/{photo.name}" if given else f"labelled/{photo.parent.name}/{photo.name}"

    linked_once(src, dest, place)
    return dest / "labelled", dest / "unlabelled"


def fold_dataset(src: Path, out: Path, holdout: list[str]) -> tuple[Path, float | None]:
    """The dataset of one fold (reused when ``out`` already holds it) and its build time (None if reused)."""
    info = out / "instacli_dataset.json"
    if info.is_file() and json.loads(info.read_text()).get("split", {}).get("holdout") == holdout:
        return out, None
    started = time.perf_counter()
    common.cli("data", "build", src, "--out", out, "--synthetic-engagement", "seed",
               "--group-pattern", PATTERN, "--holdout", ",".join(holdout), "--overwrite")
    return out, time.perf_counter() - started


def trained(data: Path, run: Path, encoder: str, extra: list[str]) -> float:
    """Train ``run`` (unless a finished one is there) and return its training wall time in seconds."""
    timing = run.with_name(run.name + ".train.json")
    if timing.is_file() and (run / "model.safetensors").is_file():
        return json.loads(timing.read_text())["seconds"]
    started = time.perf_counter()
    common.cli("train", "--data", data, "--encoder", encoder, "--out", run, "--overwrite", *extra)
    seconds = time.perf_counter() - started
    timing.write_text(json.dumps({"seconds": seconds}))
    return seconds


def evaluated(run: Path, data: Path, split: str) -> dict[str, Any]:
    return json.loads(common.cli("evaluate", run, "--data", data, "--split", split, "--json").stdout)


def recipe_name(encoder: str, extra: list[str]) -> str:
    return f"{encoder} + extra train flags `{shlex.join(extra)}`" if extra else f"{encoder} (CLI defaults)"


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def markdown(results: list[dict[str, Any]], category_of: dict[str, str]) -> str:
    """The summary table (one row per recipe and fold, then the mean over folds) and the per-source table."""
    lines = ["| recipe | fold | held-out sources | test acc | shift acc | shift macro F1 | drop (points) | train time |",
             "|---|---|---|---|---|---|---|---|"]
    by_recipe: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_recipe[r["recipe"]].append(r)
    for recipe, rows in by_recipe.items():
        for r in rows:
            lines.append(f"| {recipe} | {r['fold']} | {', '.join(r['holdout'])} | {pct(r['test_accuracy'])} | {pct(r['shift_accuracy'])} "
                         f"| {r['shift_f1_macro']:.3f} | {100 * r['drop']:.1f} | {r['train_seconds']:.0f} s |")
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("test_accuracy", "shift_accuracy", "shift_f1_macro", "drop", "train_seconds")}
        lines.append(f"| **{recipe}** | **mean** | all, each once | **{pct(mean['test_accuracy'])}** | **{pct(mean['shift_accuracy'])}** "
                     f"| **{mean['shift_f1_macro']:.3f}** | **{100 * mean['drop']:.1f}** | {mean['train_seconds']:.0f} s |")
    recipes = list(by_recipe)
    lines += ["", "Accuracy per held-out source (each source is held out in exactly one fold):", "",
              "| source | category | n | " + " | ".join(recipes) + " |", "|---|---|---|" + "---|" * len(recipes)]
    accuracy = {(r["recipe"], s): v for r in results for s, v in r["per_source"].items()}
    for source in sorted(category_of, key=lambda s: (category_of[s], s)):
        cells = [accuracy.get((recipe, source)) for recipe in recipes]
        if not any(cells):  # held out in a fold left out by --only-fold
            continue
        n = next((c["n"] for c in cells if c), 0)
        lines.append(f"| {source} | {category_of[source]} | {n} | " + " | ".join(pct(c["accuracy"]) if c else "–" for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoders", default="efficientnet-lite0,vit-scratch", help="comma-separated encoders to train")
    p.add_argument("--folds", type=int, default=2, help="number of leave-sources-out folds")
    p.add_argument("--extra", default=None, help="extra `instacli train` flags, e.g. '--freeze-encoder' (labelled in the output)")
    p.add_argument("--only-fold", type=int, default=None, metavar="K", help="run fold K alone (1-based), e.g. to try a recipe on its hardest fold first")
    p.add_argument("--cache", type=Path, default=None, help="folder that keeps built datasets and finished runs for later invocations")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_PER_SOURCE} photos per source and, unless --extra, '{QUICK_EXTRA}'")
    p.add_argument("--src", type=Path, default=common.POSTS_DEV, help="posts-dev (category folders of <source>_<n>.jpg)")
    p.add_argument("--out", type=Path, default=Path("shift-results.json"), help="results JSON")
    p.add_argument("--unlabelled-share", type=float, default=0.0, metavar="F",
                   help="give F of each held-out source's photos to training unlabelled (--distill-photos; with --extra "
                        "'--distill-from TEACHER'), the rest are the shift test: a user who has next month's posts, unlabelled")
    argv = sys.argv[1:]
    if "--extra" in argv[:-1]:  # argparse takes a value that starts with "--" for an option: join it (--extra=VALUE)
        i = argv.index("--extra")
        argv[i:i + 2] = [f"--extra={argv[i + 1]}"]
    args = p.parse_args(argv)

    if not args.src.is_dir():
        sys.exit(f"{args.src}: photo folder not found; pass --src or set INSTACLI_POSTS_DEV")
    work = args.cache or Path(tempfile.mkdtemp(prefix="instacli-shift-"))
    work.mkdir(parents=True, exist_ok=True)
    extra = shlex.split(args.extra if args.extra is not None else QUICK_EXTRA if args.quick else "")
    os.environ["INSTACLI_CACHE"] = str(work / "decode-cache")  # decoded splits of every fold stay with the work folder
    common.log(f"work folder: {work}")
    src = quick_subset(args.src, work / f"src-{QUICK_PER_SOURCE}", QUICK_PER_SOURCE) if args.quick else args.src
    by_category = sources_by_category(src)
    category_of = {s: c for c, sources in by_category.items() for s in sources}
    folds = make_folds(by_category, args.folds)
    if args.only_fold is not None and not 1 <= args.only_fold <= len(folds):
        sys.exit(f"--only-fold {args.only_fold}: must be between 1 and --folds ({len(folds)})")
    size = "quick" if args.quick else "all"
    results: list[dict[str, Any]] = []
    for k, holdout in enumerate(folds, 1):
        if args.only_fold not in (None, k):
            continue
        fold_src, fold_extra, tag = src, extra, f"{size}-fold{k}of{len(folds)}"
        if args.unlabelled_share > 0:
            tag += f"-unlabelled{round(100 * args.unlabelled_share)}"
            fold_src, unlabelled = unlabelled_split(src, work / f"src-{tag}", holdout, args.unlabelled_share)
            fold_extra = [*extra, "--distill-photos", str(unlabelled)]
        data, build_seconds = fold_dataset(fold_src, work / f"data-{tag}", holdout)
        common.log(f"fold {k}: held out {', '.join(holdout)}" + (f" (built in {build_seconds:.0f} s)" if build_seconds else " (cached)"))
        for encoder in filter(None, (e.strip() for e in args.encoders.split(","))):
            slug = re.sub(r"[^A-Za-z0-9=.]+", "-", " ".join(extra)).strip("-")
            run = work / "runs" / f"{encoder}{'-' + slug if slug else ''}-{tag}"
            seconds = trained(data, run, encoder, fold_extra)
            test, shift = evaluated(run, data, "test"), evaluated(run, data, "holdout")
            row = {
                "recipe": recipe_name(encoder, extra) + (f", {pct(args.unlabelled_share)} of each held-out source given unlabelled"
                                                         if args.unlabelled_share > 0 else ""),
                "encoder": encoder, "extra_train_flags": fold_extra, "fold": k,
                "holdout": holdout, "test_n": test["n"], "test_accuracy": test["accuracy"], "shift_n": shift["n"],
                "shift_accuracy": shift["accuracy"], "shift_f1_macro": shift["f1_macro"],
                "drop": test["accuracy"] - shift["accuracy"], "train_seconds": seconds,
                "per_source": shift["accuracy_by_group"],
                "run": str(run), "data": str(data),
            }
            results.append(row)
            common.log(f"  {row['recipe']}: test {pct(row['test_accuracy'])}, shift {pct(row['shift_accuracy'])}, "
                       f"train {seconds:.0f} s")
    table = markdown(results, category_of)
    common.log("\n" + table)
    from instacli.io import write_json

    write_json(args.out, {"command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]), "src": str(args.src), "quick": args.quick,
                          "pattern": PATTERN, "folds": folds, "results": results, "markdown": table})
    common.log(f"\nresults in {args.out}")


if __name__ == "__main__":
    main()
