"""Hostile inputs through the CLI: every attack must end handled, never hung, exhausted or a traceback.

    python benchmarks/attacks.py [--work DIR] [--only TEXT]

Each attack is one hostile file (or folder, or table) beside a few good photos, given to
``data build``, ``evaluate --data FOLDER`` or ``predict``, or one hostile output (an ``--out``
another process is writing, a file or folder in the way, a dataset as a run folder, a run whose
``eval/`` cannot be written, a results.json pointing the report at a secret file) or setting, in a child process whose address space
may grow by only 1 GB after its imports and that is killed after 120 s. *Handled* means: the
command exits 0 and reports the hostile file (``build_report.json`` skipped list, the ``skipped``
of ``evaluate --json``, an error row of ``predict``) while still processing every good photo, or it
exits 2 with a single ``error:`` line (for what must stop the command: an ambiguous table, a count
beyond int64, a tampered run, checkpoint or dataset, a setting out of range). Prints one line per
attack, then ``N attacks, N handled`` (about 8 minutes on 2 cores, mostly interpreter start-up).
Needs no photo data: everything is generated in ``--work`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import lzma
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from instacli.progress import Reporter  # noqa: E402

GOOD_PER_CLASS = 3
CAP_BYTES = 2**30
TIMEOUT_S = 120
#: Runs the CLI after its heavy imports, with the address space capped at that size + CAP_BYTES.
CAPPED_CLI = f"""
import re, resource, sys
import datasets, pyarrow.parquet, timm, torch, instacli_plugins
from instacli.cli.main import main
vm = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + {CAP_BYTES}, vm + {CAP_BYTES}))
sys.argv = ["instacli", *sys.argv[1:]]
main()
"""


def photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)


def good_tree(root: Path) -> Path:
    for c, category in enumerate(("animal", "landscape")):
        for i in range(GOOD_PER_CLASS):
            photo(root / category / f"{category}_{i}.png", c * 100 + i)
    return root


# Hostile files: each makes its attack in ``folder`` (a category folder) and returns the name it is reported under.
def fifo(folder: Path) -> str:
    os.mkfifo(folder / "fifo.jpg")
    return "fifo.jpg"


def dev_zero(folder: Path) -> str:
    (folder / "zero.jpg").symlink_to("/dev/zero")
    return "zero.jpg"


def sparse(folder: Path) -> str:
    with open(folder / "big.jpg", "wb") as handle:
        handle.truncate(3 * 2**30)
    return "big.jpg"


def wide_png(folder: Path) -> str:
    Image.new("L", (1, 1_000_000)).save(folder / "wide.png")
    return "wide.png"


def postscript(folder: Path) -> str:
    (folder / "script.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    return "script.jpg"


def heic(folder: Path) -> str:
    (folder / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    return "phone.heic"


def non_utf8(folder: Path) -> str:
    photo(folder / "tmp.png", 999)
    os.rename(folder / "tmp.png", os.fsencode(folder) + b"/caf\xe9.png")
    return "caf\\xe9.png"


def symlink_loop(folder: Path) -> str:
    (folder / "self").symlink_to("..")
    return "self"


def symlink_outside(folder: Path) -> str:
    (folder / "etc").symlink_to("/etc")
    return "etc"


HOSTILE_FILES: dict[str, Callable[[Path], str]] = {
    f.__name__: f for f in (fifo, dev_zero, sparse, wide_png, postscript, heic, non_utf8, symlink_loop, symlink_outside)
}


@dataclass
class Outcome:
    code: int | None  # None: killed at the timeout
    stderr: str
    reported: bool  # the hostile item is listed (skipped / error row)
    good: int  # good photos processed


def listed(reason: str) -> bool:
    """A reason that counts as handling: there is one, and it is not running out of memory (which the cap caught)."""
    return bool(reason) and "MemoryError" not in reason


def run_cli(*args: object, env: dict[str, str] | None = None) -> tuple[int | None, str, str]:
    try:
        done = subprocess.run([sys.executable, "-c", CAPPED_CLI, *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT_S,
                              env={**os.environ, "MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system", **(env or {})})
    except subprocess.TimeoutExpired:
        return None, "timed out", ""
    return done.returncode, done.stderr, done.stdout


def attack_build(src: Path, out: Path, item: str, *extra: object) -> Outcome:
    code, stderr, _ = run_cli("data", "build", src, "--out", out, "--workers", "1", *extra)
    if code != 0:
        return Outcome(code, stderr, False, 0)
    report = json.loads((out / "build_report.json").read_text())
    return Outcome(code, stderr, any(s["file"].endswith(item) and listed(s["reason"]) for s in report["skipped"]), report["images"])


def attack_evaluate(run: Path, src: Path, item: str) -> Outcome:
    code, stderr, stdout = run_cli("evaluate", run, "--data", src, "--json", "--workers", "1")
    if code != 0:
        return Outcome(code, stderr, False, 0)
    result = json.loads(stdout)
    return Outcome(code, stderr, any(s["file"].endswith(item) and listed(s["reason"]) for s in result.get("skipped", [])), result["n"])


def attack_predict(run: Path, src: Path, out: Path, item: str, *extra: object) -> Outcome:
    code, stderr, _ = run_cli("predict", run, src, "--out", out, "--workers", "0", *extra)
    if code != 0:
        return Outcome(code, stderr, False, 0)
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    reported = any(r["file"].endswith(item) and listed(r["error"]) for r in rows)
    return Outcome(code, stderr, reported, sum(not r["error"] for r in rows))


def attack_refused(*args: object, env: dict[str, str] | None = None) -> Outcome:
    """Any command that must stop with one ``error:`` line."""
    code, stderr, _ = run_cli(*args, env=env)
    return Outcome(code, stderr, False, 0)


LOCK_HOLDER = """
import sys
from pathlib import Path
from instacli.io import output_lock
with output_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def while_locked(out: Path, attack: Callable[[], Outcome]) -> Outcome:
    """``attack`` while another process holds the output lock of ``out`` (as a running command does)."""
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    holder.stdout.readline()
    try:
        return attack()
    finally:
        holder.stdin.close()
        holder.wait(timeout=TIMEOUT_S)


def attack_report(results: Path, secret: Path) -> Outcome:
    """``report`` of a results.json whose figure paths point outside its folder: exit 0, the secret not embedded."""
    code, stderr, _ = run_cli("report", results)
    page = (results / "report.html").read_text() if code == 0 else ""
    return Outcome(code, stderr, secret.read_text() not in page and base64.b64encode(secret.read_bytes()).decode() not in page, 0)


def handled(outcome: Outcome, expect: str, good: int) -> bool:
    """``expect``: "reported" (exit 0, listed, every good photo processed) or "refused" (exit 2, one line)."""
    if outcome.code is None or "Traceback" in outcome.stderr:
        return False
    if expect == "report":
        return outcome.code == 0 and outcome.reported
    if expect == "refused":
        lines = outcome.stderr.strip().splitlines()
        return outcome.code == 2 and len(lines) == 1 and lines[0].startswith("error:")
    return outcome.code == 0 and outcome.reported and outcome.good >= good


def table_attacks(work: Path, run: Path) -> list[tuple[str, Callable[[], Outcome], str, int]]:
    """Attacks by tables and metadata: counts beyond int64, ambiguous columns, xz bomb, bare-name rows, formulas."""
    src = good_tree(work / "tables" / "src")
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png"))
    attacks = []
    for label, header, value in (("likes 1e308", "likes", "1e308"), ("likes 10**20", "likes", "99999999999999999999"),
                                 ("likes and Likes", "likes,Likes", "1,2")):
        table = work / "tables" / f"{label.replace(' ', '_')}.csv"
        table.write_text(f"file_name,{header}\n" + "".join(f"{n},{value if i == 1 else '5' + ',5' * header.count(',')}\n" for i, n in enumerate(names)))
        attacks.append((f"build --engagement ({label})", lambda t=table, l=label: attack_build(
            src, work / "tables" / f"out-{l}", "", "--engagement", t), "refused", 0))
    download = work / "tables" / "download" / "someone"
    for day in (1, 2):
        stem = f"2024-01-0{day}_10-00-00_UTC"
        photo(download / f"{stem}.png", day)
        node = {"node": {"shortcode": stem, "edge_media_preview_like": {"count": 5}}, "instaloader": {"node_type": "Post"}}
        (download / f"{stem}.json.xz").write_bytes(lzma.compress(json.dumps(node).encode()))
    photo(download / "2024-01-03_10-00-00_UTC.png", 3)
    (download / "2024-01-03_10-00-00_UTC.json.xz").write_bytes(lzma.compress(bytes(16 * 2**20), preset=0) * 250)  # 4 GB
    attacks.append(("build instaloader (.json.xz unpacking to 4 GB)", lambda: attack_build(
        download.parent, work / "tables" / "out-xz", "2024-01-03_10-00-00_UTC.json.xz"), "reported", 2))
    bare = work / "tables" / "bare"
    photo(bare / "d1" / "p.png", 1)
    photo(bare / "d2" / "p.png", 2)
    (work / "tables" / "bare.csv").write_text("file_name,comments,shares\np.png,1,2\n")
    attacks.append(("predict --metadata (bare name for d1/p.png and d2/p.png)", lambda: attack_predict(
        run, bare, work / "tables" / "bare.csv.out.csv", "", "--metadata", work / "tables" / "bare.csv"), "refused", 0))
    formula = work / "tables" / "formula"
    photo(formula / "=HYPERLINK(1).png", 5)
    attacks.append(("predict (file named =HYPERLINK(1).png)", lambda: attack_predict(run, formula, work / "tables" / "formula.csv", ""),
                    "formula", 0))
    return attacks


def output_attacks(work: Path, run: Path, data: Path, src: Path) -> list[tuple[str, Callable[[], Outcome], str, int]]:
    """Attacks by outputs and settings: concurrent writers, files or folders in the way, a run that is
    not a run, an unwritable eval folder, a report pointed at a secret, bad JSON in the environment."""
    work.mkdir(parents=True)
    (work / "file").write_text("in the way")
    (work / "folder.csv").mkdir()
    data_copy = work / "data"
    shutil.copytree(data, data_copy)
    run_copy = work / "run"
    shutil.copytree(run, run_copy, ignore=shutil.ignore_patterns("eval"))
    (run_copy / "eval").write_text("a file where eval/ should be")
    secret = work / "secret.txt"
    secret.write_text("SECRET-TOKEN-0123")
    report = work / "report"
    report.mkdir()
    (report / "results.json").write_text(json.dumps({"rows": [
        {"key": f"m{i}", "name": f"m{i}", "kind": "model", "status": "ok", "metrics": {"accuracy": 0.5}, "figures": {"likes": path}}
        for i, path in enumerate(["../secret.txt", str(secret)])], "runs": []}))
    tiny = ["--epochs", "1", "--quiet", *common.TINY]
    return [
        ("build --out that another process is writing", lambda: while_locked(work / "locked", lambda: attack_refused(
            "data", "build", src, "--out", work / "locked", "--workers", "1")), "refused", 0),
        ("predict --out that another process is writing", lambda: while_locked(work / "locked.csv", lambda: attack_refused(
            "predict", run, src, "--out", work / "locked.csv", "--workers", "0")), "refused", 0),
        ("train --out that another process is writing", lambda: while_locked(work / "locked-run", lambda: attack_refused(
            "train", "--data", data, "--out", work / "locked-run", *tiny)), "refused", 0),
        ("build --out under a file", lambda: attack_refused("data", "build", src, "--out", work / "file" / "data"), "refused", 0),
        ("predict --out FOLDER.csv --overwrite", lambda: attack_refused("predict", run, src, "--out", work / "folder.csv", "--overwrite"), "refused", 0),
        ("train --out the dataset folder", lambda: attack_refused("train", "--data", data_copy, "--out", data_copy, *tiny), "refused", 0),
        ("evaluate a run whose eval/ cannot be written", lambda: attack_refused("evaluate", run_copy, "--data", data, "--json"), "refused", 0),
        ("train with bad JSON in INSTACLI_ENCODER_OPTIONS", lambda: attack_refused(
            "train", "--data", data, "--out", work / "env-run", *tiny, env={"INSTACLI_ENCODER_OPTIONS": "{width: 8"}), "refused", 0),
        ("report of a results.json pointing at ../secret.txt and /abs/secret.txt", lambda: attack_report(report, secret), "report", 0),
    ]


class StopAfterEpoch(Reporter):
    """Ends a training right after its first epoch's checkpoint: an interrupted run to resume."""

    def epoch_end(self, record: dict) -> None:
        raise InterruptedError


def interrupted_run(work: Path, data: Path) -> Path:
    """A tiny run stopped after its first epoch, with the checkpoint that ``train --resume`` reads."""
    from instacli.settings import TrainSettings
    from instacli.training import train

    run = work / "runs" / "interrupted"
    shutil.rmtree(run, ignore_errors=True)
    options = {k: int(v) for k, v in (pair.split("=") for pair in common.TINY[1::2])}
    try:
        train(TrainSettings(data=data, out=run, epochs=3, encoder_options=options, workers=0), StopAfterEpoch())
    except InterruptedError:
        pass
    return run


def damaged_copy(source: Path, target: Path, damage: Callable[[Path], object]) -> Path:
    """A fresh copy of the folder ``source`` at ``target``, then damaged."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    damage(target)
    return target


def halve(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def nan_weights(path: Path) -> None:
    """Every weight of the run NaN, shapes kept (a run edited in place)."""
    from safetensors.torch import load_file, save_file

    save_file({name: tensor.float().fill_(float("nan")).to(tensor.dtype) if tensor.is_floating_point() else tensor
               for name, tensor in load_file(str(path)).items()}, str(path))


def refused(*args: object) -> Outcome:
    code, stderr, _ = run_cli(*args)
    return Outcome(code, stderr, False, 0)


class Evil:
    """A pickle that would run code if unpickled unrestricted."""

    def __reduce__(self) -> tuple:
        return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))


def tamper_attacks(work: Path, run: Path, data: Path, src: Path) -> list[tuple[str, Callable[[], Outcome], str, int]]:
    """Tampered or damaged run folders, checkpoints and datasets, and settings out of range: each one line, exit 2."""
    runs = {
        "empty model.safetensors": lambda r: (r / "model.safetensors").write_bytes(b""),
        "truncated model.safetensors": lambda r: halve(r / "model.safetensors"),
        "pickle as model.safetensors": lambda r: (r / "model.safetensors").write_bytes(pickle.dumps(Evil())),
        "bogus safetensors header": lambda r: (r / "model.safetensors").write_bytes((2**40).to_bytes(8, "little") + b"{}"),
        "class_names edited": lambda r: edit_json(r / "config.json", lambda c: c["class_names"].append("food")),
        "scaler.features edited": lambda r: edit_json(r / "config.json", lambda c: c["scaler"]["features"].append("followers")),
        "encoder width edited": lambda r: edit_json(r / "config.json", lambda c: c["encoder_options"].update(width=64)),
        "encoder option width=-8": lambda r: edit_json(r / "config.json", lambda c: c["encoder_options"].update(width=-8)),
        "config.json a list": lambda r: (r / "config.json").write_text("[]"),
        "config.json without class_names": lambda r: edit_json(r / "config.json", lambda c: c.pop("class_names")),
        "task evil": lambda r: edit_json(r / "config.json", lambda c: c.update(task="evil")),
        "target_std NaN": lambda r: edit_json(r / "config.json", lambda c: c["scaler"].update(target_std=float("nan"))),
        "temperature 0": lambda r: edit_json(r / "config.json", lambda c: c.update(temperature=0)),
        "temperature NaN": lambda r: edit_json(r / "config.json", lambda c: c.update(temperature=float("nan"))),
        "NaN weights": lambda r: nan_weights(r / "model.safetensors"),
    }
    attacks = []
    for label, damage in runs.items():
        bad = work / "tampered" / label.replace(" ", "_")
        attacks.append((f"predict (run: {label})", lambda b=bad, d=damage: refused(
            "predict", damaged_copy(run, b, d), src, "--out", b.with_name(b.name + ".csv"), "--workers", "0"), "refused", 0))
    interrupted = interrupted_run(work, data)
    checkpoints = {
        "truncated optimizer.bin": lambda c: halve(c / "optimizer.bin"),
        "pickle as optimizer.bin": lambda c: (c / "optimizer.bin").write_bytes(pickle.dumps(Evil())),
        "truncated trainer_state.json": lambda c: halve(c / "trainer_state.json"),
    }
    for label, damage in checkpoints.items():
        bad = work / "tampered" / label.replace(" ", "_")
        attacks.append((f"train --resume (checkpoint: {label})", lambda b=bad, d=damage: refused(
            "train", "--out", damaged_copy(interrupted, b, lambda r: d(r / "checkpoint")), "--resume", "--quiet"), "refused", 0))
    datasets = {
        "truncated instacli_dataset.json": lambda d: halve(d / "instacli_dataset.json"),
        "truncated Arrow shard": lambda d: halve(d / "test" / "data-00000-of-00001.arrow"),
    }
    for label, damage in datasets.items():
        bad = work / "tampered" / label.replace(" ", "_")
        attacks.append((f"evaluate --data (dataset: {label})", lambda b=bad, d=damage: refused(
            "evaluate", run, "--data", damaged_copy(data, b, d), "--workers", "0"), "refused", 0))
    (work / "width.toml").write_text("encoder_options = {width = -4}\n")
    for flags in (["--epochs", "0"], ["--batch-size", "0"], ["--batch-size", "-4"], ["--grad-accum", "0"], ["--image-size", "3"],
                  ["--image-size", "-64"], ["--image-size", "100000"], ["-E", "width=-8"], ["-E", "depth=1.5"], ["-E", "pool=evil"],
                  ["-R", "hidden=-1"], ["--config", work / "width.toml"], ["--lr", "nan"], ["--lr", "-1"],
                  ["-E", "width=20001", "-E", "heads=1"]):  # 81 GiB of weights in allocations that each fit
        attacks.append((f"train {' '.join(map(str, flags))}", lambda f=flags: refused(
            "train", "--data", data, "--out", work / "tampered" / "never-written", "--quiet", *f), "refused", 0))
    for command, args in (("predict", [src, "--out", work / "tampered" / "never.csv"]), ("evaluate", ["--data", data])):
        for size in ("0", "-4"):
            attacks.append((f"{command} --batch-size {size}", lambda c=command, a=args, s=size: refused(c, run, *a, "--batch-size", s), "refused", 0))
    return attacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the generated files (default: a temporary one)")
    parser.add_argument("--only", default="", help="run only the attacks whose label contains this text")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="instacli-attacks-"))
    os.environ["INSTACLI_CACHE"] = str(work / "cache")
    train_src = good_tree(work / "train-src")
    data = work / "train-data"
    if not data.is_dir():
        common.cli("data", "build", train_src, "--out", data, "--synthetic-engagement", "seed")
    run = common.trained_run(work, data, "tiny", *common.TINY)
    attacks: list[tuple[str, Callable[[], Outcome], str, int]] = []
    good = 2 * GOOD_PER_CLASS
    fresh = Path(tempfile.mkdtemp(prefix="attacks-", dir=work))  # the hostile files of this invocation
    for name, make in HOSTILE_FILES.items():
        for command in ("build", "evaluate", "predict"):
            src = good_tree(fresh / command / name)
            item = f"animal/{make(src / 'animal')}"
            if command == "build":
                attacks.append((f"build ({name})", lambda s=src, i=item: attack_build(s, s.with_name(s.name + "-out"), i), "reported", good))
            elif command == "evaluate":
                attacks.append((f"evaluate --data ({name})", lambda s=src, i=item: attack_evaluate(run, s, i), "reported", good))
            else:
                attacks.append((f"predict ({name})", lambda s=src, i=item: attack_predict(run, s, s.with_name(s.name + ".csv"), i), "reported", good))
    attacks += table_attacks(fresh, run)
    attacks += output_attacks(fresh / "outputs", run, data, train_src)
    attacks += tamper_attacks(fresh, run, data, train_src)
    attacks = [a for a in attacks if args.only in a[0]]
    passed = 0
    for label, attack, expect, n_good in attacks:
        outcome = attack()
        if expect == "formula":
            rows = list(csv.DictReader((fresh / "tables" / "formula.csv").open(encoding="utf-8"))) if outcome.code == 0 else []
            ok = outcome.code == 0 and [r["file"] for r in rows] == ["'=HYPERLINK(1).png"]
        else:
            ok = handled(outcome, expect, n_good)
        passed += ok
        detail = "timed out" if outcome.code is None else f"exit {outcome.code}" + (f": {outcome.stderr.strip().splitlines()[-1]}" if outcome.code else "")
        common.log(f"{'handled' if ok else 'FAILED '}  {label}  ({detail})")
    common.log(f"{len(attacks)} attacks, {passed} handled")
    shutil.rmtree(work if args.work is None else fresh, ignore_errors=True)


if __name__ == "__main__":
    main()
