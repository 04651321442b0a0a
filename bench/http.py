"""HTTP API latency and throughput on cached queries.

Builds a synthetic store (1 model, 3 checkpoints, 6 layers), caches the comparisons,
starts ``actdb serve`` in a subprocess on 127.0.0.1, then runs 8 concurrent clients for
20 s (``--tiny``: 2 s), each alternating ``GET /v1/results`` (one 100-row page) and
``POST /v1/compare`` (36 cached pairs). Reports p50/p99 latency, throughput and errors;
exits 1 on any error or (full runs) when a p99 is over the 100 ms target.

    python bench/http.py [--tiny] [--clients 8] [--seconds 20]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named http.py: keep its folder off sys.path, or it shadows the standard
# library's http package (which httpx and uvicorn import).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

import actdb  # noqa: E402

_spec = importlib.util.spec_from_file_location("actdb_bench_common", _HERE / "_common.py")
assert _spec is not None and _spec.loader is not None
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)
markdown_table = _common.markdown_table

KEY = "bench-key"
CHECKPOINTS = {"step100": 100, "step1000": 1000, "final": 10000}


def build(path: Path, n: int, dim: int, layers: int) -> None:
    rng = np.random.default_rng(0)
    db = actdb.open(str(path))
    db.add_dataset("d", [f"text {i}" for i in range(n)])
    base = rng.standard_normal((n, dim))
    with db.session():
        for ck, step in CHECKPOINTS.items():
            db.add_checkpoint("m", ck, step=step)
            h = base
            for layer in range(layers):
                h = np.tanh(h @ (np.eye(dim) + rng.standard_normal((dim, dim)) * 0.3)).astype(np.float32)
                db.write_rep("m", ck, "d", f"hidden.{layer}", h, pooling="mean")
    for ck in CHECKPOINTS:
        db.reps(checkpoint=ck).compare(measure=["linear_cka", "procrustes"]).compute()
    db.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "actdb", "serve", str(store), "--port", str(port),
                             "--api-key", KEY, "--log-level", "warning"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("actdb serve did not start")


def client(url: str, seconds: float, out: dict[str, list[float]], errors: list[str], start: threading.Barrier) -> None:
    compare_body = {"a": "checkpoint=final", "measure": "linear_cka"}
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as c:
        c.get("/v1/models")  # connect
        start.wait()
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline:
            name = "GET /v1/results" if i % 2 == 0 else "POST /v1/compare"
            t = time.perf_counter()
            if i % 2 == 0:
                r = c.get("/v1/results", params={"measure": "linear_cka", "limit": 100, "offset": 0})
            else:
                r = c.post("/v1/compare", json=compare_body)
            elapsed = time.perf_counter() - t
            if r.status_code != 200:
                errors.append(f"{name}: {r.status_code} {r.text[:200]}")
            elif i % 2 == 1 and not all(row["cached"] for row in r.json()["rows"]):
                errors.append(f"{name}: a value was not cached")
            out[name].append(elapsed)
            i += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2 s run (CI smoke test)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.tiny else 20.0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        build(store, n=500 if args.tiny else 2000, dim=64, layers=6)
        port = free_port()
        proc = start_server(store, port)
        try:
            out: dict[str, list[float]] = {"GET /v1/results": [], "POST /v1/compare": []}
            errors: list[str] = []
            barrier = threading.Barrier(args.clients)
            threads = [threading.Thread(target=client, args=(f"http://127.0.0.1:{port}", seconds, out, errors, barrier))
                       for _ in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    rows = []
    worst = 0.0
    for name, lat in out.items():
        ms = np.array(lat) * 1000
        p99 = float(np.percentile(ms, 99)) if len(ms) else float("nan")
        worst = max(worst, p99)
        rows.append({"endpoint": name, "requests": len(lat), "req/s": len(lat) / wall,
                     "p50 ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"), "p99 ms": p99,
                     "errors": sum(e.startswith(name) for e in errors)})
    total = sum(len(v) for v in out.values())
    print(f"{args.clients} clients x {seconds:g} s, {os.cpu_count()} CPUs; {total} requests, "
          f"{total / wall:.0f} req/s overall, {len(errors)} errors")
    print(markdown_table(rows))
    for e in errors[:5]:
        print("error:", e)
    if errors:
        return 1
    if worst > 100:
        print(f"p99 {worst:.1f} ms is over the 100 ms target")
        # a 2-second --tiny run inside a loaded test suite is a smoke test, not a measurement
        return 0 if args.tiny else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
