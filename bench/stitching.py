"""Stitching benchmark: a full 13 x 13 stitching grid (hidden.0..12 of model A into
hidden.0..12 of model B) between two tiny 12-layer Pythia-architecture models trained here.

Every pair fits its affine map from the stored moments and runs B's tail over the held-out
texts in batches. Target: the whole grid in under a minute on 2 cores.

    python bench/stitching.py          # 12 layers (13 x 13 = 169 pairs)
    python bench/stitching.py --tiny   # 2 layers, every path once (CI)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# bench/ must not shadow the standard library (bench/http.py vs `import http`)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).parent))
import actdb  # noqa: E402
from _common import markdown_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from actdb.demo.training import pythia_config, train_causal_lm, train_tokenizer
    from actdb.ingest.texts import docstring_texts

    layers, width, steps, n_texts = (2, 32, 20, 48) if args.tiny else (12, 64, 60, 160)
    work = Path(tempfile.mkdtemp(prefix="actdb-stitch-", dir=os.environ.get("ACTDB_BENCH_DIR")))
    try:
        texts = docstring_texts(400, seed=5)
        tok = train_tokenizer(texts, vocab_size=400)
        t = time.perf_counter()
        for name, act, seed in (("a", "gelu", 0), ("b", "solu", 1)):
            train_causal_lm(pythia_config(len(tok), width=width, layers=layers, heads=4, act=act), tok, texts,
                            work / name, checkpoint_steps=[steps], batch_size=16, seq_len=32, seed=seed)
        train_s = time.perf_counter() - t
        db = actdb.open(str(work / "store"))
        t = time.perf_counter()
        for name in ("a", "b"):
            db.ingest(str(work / name), "docs", texts=texts[:n_texts], name=name, sites=["hidden.*"],
                      pooling="token", dtype="float32", max_length=32, quiet=True)
        ingest_s = time.perf_counter() - t
        plan = db.reps(model="a").compare(db.reps(model="b"), measure="stitching")
        t = time.perf_counter()
        rows = plan.compute().rows
        grid_s = time.perf_counter() - t
        t = time.perf_counter()
        plan.compute()
        cached_s = time.perf_counter() - t
        n = layers + 1
        assert len(rows) == n * n
        print(f"\n## {n} x {n} stitching grid, two {layers}-layer width-{width} models, "
              f"{n_texts} texts (held-out: every 4th)\n")
        print(markdown_table([
            {"step": "train both models", "seconds": train_s},
            {"step": "ingest both (token-level, all hidden sites)", "seconds": ingest_s},
            {"step": f"stitching grid ({n * n} pairs)", "seconds": grid_s},
            {"step": "same grid again (cached)", "seconds": cached_s},
        ]))
        diag = [r["value"] for r in rows if r["layer_a"] == r["layer_b"]]
        print(f"\nmean penalty on the diagonal: {sum(diag) / len(diag):.3f} nats/token; "
              f"max over the grid: {max(r['value'] for r in rows):.3f}")
        db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
