"""Load on ``instacli serve``: 200 requests from 8 concurrent clients, against one client at a time.

    python benchmarks/serve.py [--quick] [--work DIR] [--run RUN] [--requests 200] [--clients 8]

The server is the real CLI (``python -m instacli serve RUN``) in a child process on 127.0.0.1; the
run is ``--run`` or an efficientnet-lite0 run trained once (one epoch, CLI defaults: the frozen
probe) on 100 posts-dev photos per category. Each request posts one posts-dev photo (distinct
photos, cycling) with its engagement as form fields; every client is a thread with its own
keep-alive ``httpx.Client``. Printed: errors (any answer but 200, or a row with an error), p50/p95
latency, throughput, and the server's batches (``GET /health``), first for one client sending the
requests one after another (what batching cannot help), then for the concurrent clients. The last
line is ``serve_concurrency ratio X target 1``: concurrent throughput / one-client throughput.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: Path, port: int) -> subprocess.Popen:
    """``instacli serve RUN`` in a child process, once it answers ``GET /health``."""
    import httpx

    server = subprocess.Popen([sys.executable, "-m", "instacli", "serve", str(run), "--port", str(port)])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"instacli serve exited with {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    sys.exit("instacli serve did not answer within 300 s")


def load(url: str, photos: list[Path], requests: int, clients: int) -> dict[str, float]:
    """``requests`` POSTs of one photo each from ``clients`` threads; latencies, errors and throughput."""
    import httpx

    payloads = [(p.name, p.read_bytes()) for p in photos]

    def client(indices: range) -> list[tuple[float, bool]]:
        out = []
        with httpx.Client(base_url=url, timeout=120) as http:
            for i in indices:
                name, data = payloads[i % len(payloads)]
                started = time.perf_counter()
                answer = http.post("/predict", files={"files": (name, data, "image/jpeg")}, data={"comments": str(i % 50), "shares": str(i % 700)})
                ok = answer.status_code == 200 and not answer.json()["predictions"][0]["error"]
                out.append((time.perf_counter() - started, ok))
        return out

    before = httpx.get(f"{url}/health").json()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for part in pool.map(client, [range(k, requests, clients) for k in range(clients)]) for r in part]
    seconds = time.perf_counter() - started
    after = httpx.get(f"{url}/health").json()
    latencies = np.array([latency for latency, _ in results]) * 1000
    batches = after["batches"] - before["batches"]
    return {"requests": len(results), "errors": sum(not ok for _, ok in results), "p50_ms": float(np.percentile(latencies, 50)),
            "p95_ms": float(np.percentile(latencies, 95)), "per_s": len(results) / seconds, "batches": batches,
            "mean_batch": (after["photos"] - before["photos"]) / max(batches, 1)}


def report(label: str, m: dict[str, float]) -> None:
    common.log(f"{label}: {m['requests']:.0f} requests, {m['errors']:.0f} errors, p50 {m['p50_ms']:.0f} ms, p95 {m['p95_ms']:.0f} ms, "
               f"{m['per_s']:.1f} requests/s ({m['batches']:.0f} batches, {m['mean_batch']:.1f} photos each)")


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=None, help="run to serve (default: an efficientnet-lite0 run trained here once)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=8)
    args = p.parse_args()
    work = common.setup(args)
    requests = 80 if args.quick else args.requests
    every = common.photos(args.src)
    photos = every[:: max(1, len(every) // requests)][:requests]  # both categories, many sources
    run = args.run or common.trained_run(work, common.dataset(work, args.src, 100), "serve-efficientnet-lite0", "--encoder", "efficientnet-lite0")
    port = free_port()
    server = start_server(run, port)
    url = f"http://127.0.0.1:{port}"
    try:
        load(url, photos[:8], 8, 1)  # warm-up: the first forward passes
        one = load(url, photos, requests // 4, 1)
        report("1 client, one request after another", one)
        many = load(url, photos, requests, args.clients)
        report(f"{args.clients} concurrent clients", many)
    finally:
        server.terminate()
        server.wait(30)
    *_, torch_line = common.torch_threads()
    common.log(f"({torch_line}; {len(photos)} distinct posts-dev photos)")
    common.result("serve_concurrency", many["per_s"] / one["per_s"], 1)
    if many["errors"] or one["errors"]:
        sys.exit("some requests failed")


if __name__ == "__main__":
    main()
