"""Run every speed benchmark and end with one line per result: ``NAME ratio X target Y``.

    python benchmarks/run.py            # the full set (about 6 minutes on 2 quiet cores)
    python benchmarks/run.py --quick    # smaller data, fewer repeats

Each benchmark runs in its own process (their outputs stream through), compares instacli with a
bare baseline on the same data in the same run, and prints its ratio last; a ratio is always
"higher is better" and its target a minimum (see each file's docstring for what is timed). The exit
status is non-zero only when a benchmark fails to run, never for a missed target.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

RESULT = re.compile(r"^(\S+) ratio (\S+) target (\S+)$")


def benchmarks() -> list[list[str]]:
    from instacli import registry

    plan = [["train_throughput.py"]]
    if "efficientnet-lite0" in registry.encoders.names():
        plan.append(["train_throughput.py", "--encoder", "efficientnet-lite0"])
    plan += [["predict_throughput.py"], ["data_build.py"], ["predict_memory.py"], ["serve.py"]]
    return plan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller data and fewer repeats")
    p.add_argument("--work", type=Path, default=common.DEFAULT_WORK, help="folder for datasets, runs and caches")
    p.add_argument("--repeats", type=int, default=None, help="alternating measurements per side")
    p.add_argument("--only", nargs="*", default=None, help="run only these scripts, e.g. data_build.py")
    args = p.parse_args()
    shared = ["--work", str(args.work)] + (["--quick"] if args.quick else []) + (["--repeats", str(args.repeats)] if args.repeats else [])
    results: list[str] = []
    failures: list[str] = []
    started = time.perf_counter()
    for bench in benchmarks():
        if args.only and bench[0] not in args.only:
            continue
        label = " ".join(bench)
        print(f"\n=== {label}", flush=True)
        process = subprocess.Popen([sys.executable, str(HERE / bench[0]), *bench[1:], *shared], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        found = []
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if RESULT.match(line.strip()):
                found.append(line.strip())
        if process.wait() != 0 or not found:
            failures.append(f"{label} (exit {process.returncode}{', no result line' if not found else ''})")
        results += found
    print(f"\n=== summary ({time.perf_counter() - started:.0f} s; ratio ≥ target meets the target)")
    for failure in failures:
        print(f"FAILED {failure}")
    for line in results:
        print(line)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
