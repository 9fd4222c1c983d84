"""Shared pieces of the speed benchmarks: the work folder, datasets and runs built once, CLI calls, timing.

Every benchmark compares ``instacli`` with a bare baseline *in the same process run, on the same
data*, alternating the two sides ``--repeats`` times (the machine is shared, so single timings are
noisy) and keeping each side's best. It prints its ratio last, as ``NAME ratio X target Y``; a ratio
is always "higher is better" and the target is a minimum.

Artifacts (datasets built from posts-dev, trained runs, the decode cache) live in ``--work``
(default ``/tmp/instacli-speed``) and are reused by later benchmarks and later invocations.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# What the instacli CLI sets before torch loads (instacli/cli/main.py), given to every side of every
# benchmark alike, so that ratios measure the code and not the OpenMP wait policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
POSTS_DEV = Path(os.environ.get("INSTACLI_POSTS_DEV", ROOT.parent / "shared" / "data" / "posts-dev"))
DEFAULT_WORK = Path(os.environ.get("INSTACLI_BENCH_WORK", "/tmp/instacli-speed"))
TINY = ["-E", "image_size=32", "-E", "patch_size=8", "-E", "width=32", "-E", "heads=2"]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller data and fewer repeats (a few minutes)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="folder for datasets, runs and caches")
    p.add_argument("--repeats", type=int, default=None, help="alternating measurements per side (best kept)")
    p.add_argument("--src", type=Path, default=POSTS_DEV, help="photo folder with category sub-folders")
    return p


def repeats(args: argparse.Namespace, quick: int = 2, full: int = 3) -> int:
    """Alternating measurements per side: ``--repeats`` when given, else ``quick`` with ``--quick`` and ``full`` without."""
    return args.repeats or (quick if args.quick else full)


def setup(args: argparse.Namespace) -> Path:
    """Create the work folder and point the decode cache into it (also for child processes)."""
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["INSTACLI_CACHE"] = str(args.work / "cache")
    if not args.src.is_dir():
        sys.exit(f"{args.src}: photo folder not found; pass --src or set INSTACLI_POSTS_DEV")
    return args.work


def log(message: str) -> None:
    print(message, flush=True)


def result(name: str, ratio: float, target: float) -> None:
    """The benchmark's last line."""
    log(f"{name} ratio {ratio:.3f} target {target:g}")


def cli(*args: object, check: bool = True, quiet_output: bool = True) -> subprocess.CompletedProcess:
    """``python -m instacli ARGS`` in a child process (as a user runs it)."""
    command = [sys.executable, "-m", "instacli", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if check and done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    if not quiet_output:
        log(done.stdout)
    return done


def sized_subset(args: argparse.Namespace, work: Path, quick: int, full: int) -> Path:
    """:func:`subset` of ``--src`` with ``quick`` photos per category under ``--quick``, else ``full``."""
    per_class = quick if args.quick else full
    return subset(args.src, work / f"src-{per_class}", per_class)


def subset(src: Path, dest: Path, per_class: int | None) -> Path:
    """``dest/<category>/`` with symlinks to the first ``per_class`` photos of each category of ``src`` (all if None)."""
    if dest.is_dir():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    for category in sorted(p for p in src.iterdir() if p.is_dir()):
        files = sorted(f for f in category.iterdir() if f.is_file())[:per_class]
        (tmp / category.name).mkdir(parents=True, exist_ok=True)
        for f in files:
            (tmp / category.name / f.name).symlink_to(f.resolve())
    tmp.rename(dest)
    return dest


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))


def dataset(work: Path, src: Path, per_class: int | None) -> Path:
    """A built dataset (synthetic seed engagement) of ``per_class`` photos per category of ``src``."""
    name = f"ds-{per_class or 'all'}"
    out = work / name
    if not (out / "instacli_dataset.json").is_file():
        folder = subset(src, work / f"src-{per_class or 'all'}", per_class)
        cli("data", "build", folder, "--out", out, "--synthetic-engagement", "seed", "--overwrite")
    return out


def trained_run(work: Path, data: Path, name: str, *flags: object) -> Path:
    """A run trained for one epoch with ``flags`` (reused when it exists): weights to time, not to judge."""
    run = work / "runs" / name
    if (run / "model.safetensors").is_file():
        from instacli.errors import InstacliError
        from instacli.model import load_run

        try:
            load_run(run)
            return run
        except (InstacliError, RuntimeError):  # trained by an older version of the code: train again
            pass
    cli("train", "--data", data, "--out", run, "--epochs", "1", "--quiet", "--overwrite", *flags)
    return run


def alternate(sides: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call every side ``repeats`` times, interleaved (A B A B …); each returns a rate (higher = faster)."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(repeats):
        for name, measure in sides.items():
            rate = measure()
            rates[name].append(rate)
            log(f"  [{i + 1}/{repeats}] {name}: {rate:.1f}")
    return rates


def summarize(rates: dict[str, list[float]], unit: str = "images/s") -> dict[str, float]:
    best = {name: max(values) for name, values in rates.items()}
    for name, values in rates.items():
        log(f"{name}: best {best[name]:.1f} {unit} (all: {', '.join(f'{v:.1f}' for v in values)})")
    return best


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def torch_threads() -> Sequence[str]:
    import torch

    return [f"torch threads {torch.get_num_threads()}"]


@dataclass
class Measured:
    """A child process tree's wall time and memory peaks, sampled every 0.1 s.

    Sums over the tree (the CLI and its decode workers): ``peak_rss`` counts pages shared between the
    processes once per process (it overestimates); ``peak_pss`` shares them out (what the tree really
    holds); ``peak_anon`` leaves out file-backed pages (a memory-mapped cache being read, the page
    cache of files read): memory the kernel cannot reclaim by dropping pages it can read again.
    ``cpu_seconds`` is the user + system time of every process of the tree: on a machine shared with
    other work, what the command cost, where wall time also counts the waits. On Linux it is exact
    (``RUSAGE_CHILDREN``: the CLI and every process it started, each once it has ended); elsewhere it is each process's time as last sampled, which misses
    what a process spent after the last sample (up to 0.1 s each: a tenth of a small build's cost).
    """

    seconds: float
    peak_rss: int
    peak_pss: int
    peak_anon: int
    cpu_seconds: float
    stdout: str


def _tree_sample(root: int, cpu: dict[int, float]) -> tuple[int, int, int]:
    """(RSS, PSS, RSS less file-backed pages) in bytes of process ``root`` and its descendants, summed;
    records each process's CPU seconds so far in ``cpu`` (by pid)."""
    import psutil

    try:
        parent = psutil.Process(root)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    rss = pss = anon = 0
    for process in processes:
        try:
            info = process.memory_full_info()
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        anon += info.rss - info.shared
        cpu[process.pid] = times.user + times.system
    return rss, pss, anon


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux ``PR_SET_CHILD_SUBREAPER``):
    the forkserver of a CLI's decode pool outlives the CLI and is reaped by nobody, so its CPU time
    and its workers' would be lost to ``RUSAGE_CHILDREN``; adopted, they are counted."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # 36: PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _reaped(pids: Iterable[int], timeout: float = 60.0) -> bool:
    """Wait until the processes ``pids`` that this process adopted (:func:`_become_subreaper`) have
    ended and reap them, so that ``RUSAGE_CHILDREN`` counts them; False if one still runs after
    ``timeout`` seconds. A pid that is not a child (its own parent reaped it) is skipped."""
    deadline = time.monotonic() + timeout
    waiting = set(pids)
    while True:
        for pid in list(waiting):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue  # still running
            except ChildProcessError:
                pass
            waiting.discard(pid)
        if not waiting:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def measured(command: Sequence[str]) -> Measured:
    """Run ``command`` (a CLI call, as a user runs it) while sampling its tree's memory; exit on failure.
    Nothing else may run as a child of this process meanwhile (its CPU time would be counted)."""
    started = time.perf_counter()
    cpu: dict[int, float] = {}
    exact = _become_subreaper()
    cpu_before = _children_cpu_seconds()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:  # pipes would fill and block the child
        child = subprocess.Popen(list(command), stdout=out, stderr=err, text=True, env=os.environ.copy())
        peaks = [0, 0, 0]
        while child.poll() is None:
            peaks = [max(a, b) for a, b in zip(peaks, _tree_sample(child.pid, cpu))]
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        sys.exit(f"failed ({child.returncode}): {' '.join(command)}\n{stdout[-2000:]}\n{stderr[-4000:]}")
    if exact and _reaped(set(cpu) - {child.pid}):  # the CLI, reaped by poll(), and what it left behind
        return Measured(seconds, *peaks, _children_cpu_seconds() - cpu_before, stdout)
    return Measured(seconds, *peaks, sum(cpu.values()), stdout)
