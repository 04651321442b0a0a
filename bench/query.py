"""Query benchmark: the all-pairs linear-CKA plan over a training history vs the naive way.

Store: one model, 10 checkpoints x 7 layers (70 reps), n = 20,000 token rows, d = 384,
stored float32 (2.15 GB = 2.0 GiB of reps in all: more than the 2 GiB peak-RSS target). Measured in one run:

- the all-pairs plan (``db.reps().compare(measure="linear_cka").compute()``) in a fresh
  process, with its peak RSS;
- the naive way: for each pair, load both reps from zarr and call a CKA implementation
  (a NumPy float64 feature-space textbook formula, and repsim's linear CKA, the peer),
  timed on a sample of pairs and extrapolated to every pair;
- the same plan again, served from the cache through ``db.sql`` with ``dissim()`` (median of 7),
  and the same query right after a write to the catalog (median of 5: it reads the file).

    python bench/query.py           # full size (README figures)
    python bench/query.py --tiny    # every path once, in seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# bench/ must not shadow the standard library (bench/http.py vs `import http`)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).parent))
import actdb  # noqa: E402
from _common import activation_like, markdown_table  # noqa: E402

PLAN = """
import json, resource, sys, time, actdb
db = actdb.open(sys.argv[1])
t = time.perf_counter()
rows = db.reps().compare(measure="linear_cka").compute(memory_budget=int(sys.argv[2]))
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "pairs": len(rows),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SQL = ("SELECT a.rep_id AS a, b.rep_id AS b, dissim('linear_cka', a.rep_id, b.rep_id) AS cka "
       "FROM reps a CROSS JOIN reps b")


def build(path: str, checkpoints: int, layers: int, n: int, d: int) -> float:
    db = actdb.open(path)
    n_ex = n // 20
    n = n_ex * 20
    db.add_dataset("texts", [f"text {i}" for i in range(n_ex)])
    tokens = {"example": np.repeat(np.arange(n_ex), 20), "position": np.tile(np.arange(20), n_ex),
              "token_id": np.arange(n) % 30000}
    total = 0
    for c in range(checkpoints):
        step = 2 ** c * 100
        db.add_checkpoint("model", f"step{step}", step=step)
        for layer in range(layers):
            x = activation_like(n, d, seed=c * 100 + layer).astype(np.float32)
            info = db.write_rep("model", f"step{step}", "texts", f"hidden.{layer}", x, tokens=tokens,
                                tokenizer="tok", dtype="float32")
            total += info.nbytes
    db.close()
    return total


def naive_textbook(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def naive(db: actdb.Database, sample: int, use_repsim: bool) -> dict[str, float]:
    reps = list(db.reps())
    pairs = [(a, b) for a in reps for b in reps]
    random.Random(0).shuffle(pairs)
    out = {}
    peers = [("numpy float64 textbook", naive_textbook)]
    if use_repsim:
        try:
            import repsim

            peers.append(("repsim linear CKA (n x n Grams)",
                          lambda x, y: float(repsim.cka([x, y], "linear", "gretton")[0, 1])))
        except Exception as exc:  # any failure: the peer is unavailable
            print(f"(repsim unavailable: {exc})")
    for name, fn in peers:
        k = sample if name.startswith("numpy") else max(1, sample // 10)
        rows = None
        if not name.startswith("numpy") and reps[0].n_rows > 2048:
            rows = 2048  # n x n Grams: time it on 2,048 rows, extrapolate by (n / 2048)^2 (Gram products)
        t = time.perf_counter()
        for a, b in pairs[:k]:
            x = db.read_rep(a.rep_id).to_numpy().astype(np.float64)
            y = db.read_rep(b.rep_id).to_numpy().astype(np.float64)
            fn(x[:rows], y[:rows]) if rows else fn(x, y)
        per_pair = (time.perf_counter() - t) / k
        note = ""
        if rows:
            per_pair *= (reps[0].n_rows / rows) ** 2
            note = f" (timed on {rows} rows, x (n/{rows})^2: a lower estimate, Gram building is n^2 d)"
        out[name] = per_pair * len(pairs)
        print(f"  naive {name}: {per_pair:.3f} s/pair over {k} pairs -> {out[name]:,.0f} s "
              f"for {len(pairs)} pairs{note}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--budget-mib", type=int, default=768)
    args = ap.parse_args()
    ck, layers, n, d = (2, 2, 520, 32) if args.tiny else (10, 7, 20_000, 384)
    work = tempfile.mkdtemp(prefix="actdb-qbench-", dir=os.environ.get("ACTDB_BENCH_DIR"))
    try:
        store = str(Path(work) / "store")
        t = time.perf_counter()
        nbytes = build(store, ck, layers, n, d)
        print(f"built {ck * layers} reps, {nbytes / 2**30:.2f} GiB, in {time.perf_counter() - t:.0f} s")
        out = subprocess.run([sys.executable, "-c", PLAN, store, str(args.budget_mib * 2**20)],
                             capture_output=True, text=True, check=True)
        plan = json.loads(out.stdout.strip().splitlines()[-1])
        db = actdb.open(store)
        naive_times = naive(db, 4 if args.tiny else 20, use_repsim=True)
        db.sql(SQL)  # warm
        times = []
        for _ in range(7):  # the median of several runs: one run on a shared machine is noise
            t = time.perf_counter()
            cached = db.sql(SQL)
            times.append(time.perf_counter() - t)
        sql_s = sorted(times)[len(times) // 2]
        assert cached.num_rows == (ck * layers) ** 2
        cold = []  # the first query after a write to the catalog reads the file, not the copy
        for i in range(5):
            db.add_checkpoint("model", f"unused{i}", step=10**9 + i)  # changes the catalog, not the answer
            t = time.perf_counter()
            db.sql(SQL)
            cold.append(time.perf_counter() - t)
        cold_s = sorted(cold)[len(cold) // 2]
        rows = [{"what": f"all-pairs plan ({plan['pairs']} pairs, one process)", "seconds": plan["seconds"],
                 "peak RSS MiB": plan["peak_rss_mib"], "speed-up vs plan": 1.0}]
        for name, secs in naive_times.items():
            rows.append({"what": f"naive: load each pair + {name}", "seconds": secs, "peak RSS MiB": None,
                         "speed-up vs plan": secs / plan["seconds"]})
        rows.append({"what": "same plan, cached, via db.sql + dissim()", "seconds": sql_s, "peak RSS MiB": None,
                     "speed-up vs plan": plan["seconds"] / sql_s})
        rows.append({"what": "the same, first query after a catalog write", "seconds": cold_s, "peak RSS MiB": None,
                     "speed-up vs plan": plan["seconds"] / cold_s})
        print(f"\n## {ck} checkpoints x {layers} layers = {ck * layers} reps, n={n:,}, d={d}, "
              f"{nbytes / 2**30:.2f} GiB stored (float32), memory budget {args.budget_mib} MiB\n")
        print(markdown_table(rows))
        db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
