"""Read-back benchmark: a whole rep to numpy and to torch against the store's own raw read, and the
shuffled DataLoader (``Selection.dataloader``) against a sequential read, naive random-row reads
from plain zarr, and a 🤗 ``datasets`` Arrow table in torch format holding the same rows.

All figures are ratios measured in one run, the paths taking turns round after round (the
machine is shared and noisy); each figure is the median of the rounds.

- whole rep: ``db.rep(...).to_numpy()`` / ``.to_torch()`` vs ``RepArray.read_stored(0, n)``
  (target >= 0.9x);
- loader: rows/s of one shuffled epoch (batches of 1024; the loader built once, as for
  training) vs rows/s of a sequential
  ``RepArray.iter_blocks()`` pass, like for like (target >= 0.7x): float16 tensors vs the stored
  float16 blocks, float32 tensors (what a probe or an SAE trains on) vs the blocks cast to float32
  (on this CPU the float16 -> float32 cast costs about as much as decoding); naive zarr is
  ``zarr.open_array`` then ``z.oindex[sorted random rows]`` per batch (a few batches, scaled);
  the ``datasets`` row needs the package in the environment and says so when it is missing;
- ``to_xarray()``: a store of 2 checkpoints x 4 layers stacked as one lazy DataArray;
  ``.sel(layer=3).values`` reads only layer 3's chunks (counted: chunks decoded on build, on
  the slice, and layer 3's chunk count; target: nothing on build, exactly layer 3's chunks).

    python bench/readback.py            # a 256 MiB rep (float16, d=768), as in the README
    python bench/readback.py --tiny     # every code path once, in seconds (CI)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

# bench/ must not shadow the standard library (bench/http.py vs `import http`)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).parent))
import actdb  # noqa: E402
from _common import activation_like, interleaved_rounds, markdown_table  # noqa: E402

BATCH = 1024


def interleaved(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median seconds of each function over ``repeat`` rounds, the functions taking turns."""
    return {k: statistics.median(v) for k, v in interleaved_rounds(fns, repeat).items()}


def make_store(workdir: str, n: int, d: int) -> tuple[actdb.Database, np.ndarray]:
    """A store with one token-level float16 rep of ``n`` rows (128 tokens per example)."""
    x = activation_like(n, d)
    per = 128
    n_ex = -(-n // per)
    db = actdb.open(str(Path(workdir) / "store"))
    db.add_dataset("texts", [f"text {i}" for i in range(n_ex)], labels=["a" if i % 2 else "b" for i in range(n_ex)])
    ex = np.arange(n) // per
    tokens = {"example": ex, "position": np.arange(n) % per, "token_id": np.arange(n) % 50000}
    db.write_rep("m", "final", "texts", "hidden.3", x, tokens=tokens, tokenizer="bench")
    return db, x


def epoch(loader: Any) -> int:
    rows = 0
    for batch in loader:
        rows += len(batch["hidden.3"])
    return rows


def whole_rep(db: actdb.Database, repeat: int) -> list[dict]:
    handle = db.rep(model="m", checkpoint="final", site="hidden.3")
    arr = handle.array()
    n = handle.n_rows
    fns = {
        "raw": lambda: arr.read_stored(0, n),
        "numpy": handle.to_numpy,
        "torch": handle.to_torch,
    }
    for fn in fns.values():  # warm the page cache and the code paths for all alike
        fn()
    t = interleaved(fns, repeat)
    gbs = {k: arr.nbytes / v / 1e9 for k, v in t.items()}
    return [{"whole rep read": label, "GB/s (median)": gbs[key], "vs raw read": gbs[key] / gbs["raw"],
             "target": target}
            for label, key, target in (("RepArray.read_stored(0, n) (the store's raw read)", "raw", None),
                                       ("db.rep(...).to_numpy()", "numpy", ">= 0.9"),
                                       ("db.rep(...).to_torch()", "torch", ">= 0.9"))]


def naive_zarr(path: str, n: int, batches: int, seed: int = 0) -> Callable[[], int]:
    """Random-row batches read as a user would from plain zarr: sorted random rows, ``oindex``."""
    z = zarr.open_array(path, mode="r")
    rng = np.random.default_rng(seed)
    idx = [np.sort(rng.choice(n, BATCH, replace=False)) for _ in range(batches)]

    def run() -> int:
        import torch

        rows = 0
        for i in idx:
            rows += len(torch.from_numpy(z.oindex[i, :]).float())
        return rows

    return run


def hf_table(x: np.ndarray, workdir: str) -> tuple[Callable[[], int] | None, str]:
    """One shuffled epoch of a 🤗 datasets Arrow table in torch format, or None and why not."""
    if importlib.util.find_spec("datasets") is None:
        return None, "skipped: the `datasets` package is not installed in this environment (pip install datasets)"
    import datasets

    ds = datasets.Dataset.from_dict({"hidden.3": list(x)})
    ds.save_to_disk(str(Path(workdir) / "hf"))
    ds = datasets.load_from_disk(str(Path(workdir) / "hf")).with_format("torch")
    import torch

    def run() -> int:
        loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
        return sum(len(b["hidden.3"]) for b in loader)

    return run, "map-style Dataset, DataLoader(shuffle=True)"


def loader_table(db: actdb.Database, x: np.ndarray, workdir: str, repeat: int, naive_batches: int) -> list[dict]:
    sel = db.reps(model="m", checkpoint="final", site="hidden.3")
    handle = db.rep(model="m", checkpoint="final", site="hidden.3")
    arr = handle.array()
    n = len(x)
    zpath = str(Path(db.arrays_location) / handle.path)
    # loaders are built once, as for training (the catalog lookup is not part of an epoch); each
    # epoch still starts cold: its first group of chunks is read before the first batch
    shuffled, shuffled16 = sel.dataloader(BATCH), sel.dataloader(BATCH, dtype="float16")
    in_order = sel.dataloader(BATCH, shuffle=False)
    fns: dict[str, Callable[[], Any]] = {
        "sequential": lambda: sum(len(b) for _, b in arr.iter_blocks()),
        "sequential32": lambda: sum(len(b.astype(np.float32)) for _, b in arr.iter_blocks()),
        "shuffled": lambda: epoch(shuffled),
        "shuffled16": lambda: epoch(shuffled16),
        "in order": lambda: epoch(in_order),
        "naive": naive_zarr(zpath, n, naive_batches),
    }
    hf, hf_note = hf_table(x, workdir)
    if hf is not None:
        fns["hf"] = hf
    for fn in fns.values():
        fn()
    t = interleaved(fns, repeat)
    rows = {k: (naive_batches * BATCH if k == "naive" else n) / v for k, v in t.items()}
    out = [  # (label, key, the sequential read it compares with, target, note)
        ("RepArray.iter_blocks() (sequential, stored float16)", "sequential", "sequential", None, ""),
        ("RepArray.iter_blocks() + astype(float32)", "sequential32", "sequential32", None, ""),
        ("dataloader(1024, dtype='float16') shuffled", "shuffled16", "sequential", ">= 0.7",
         "vs the float16 sequential read"),
        ("dataloader(1024) shuffled, float32 tensors", "shuffled", "sequential32", ">= 0.7",
         "vs the sequential read cast to float32"),
        ("dataloader(1024, shuffle=False), float32", "in order", "sequential32", None,
         "vs the sequential read cast to float32"),
        ("plain zarr: open_array + oindex[random rows], float32", "naive", "sequential32", None,
         f"{naive_batches} batches, scaled"),
    ]
    table = [{"loader": label, "rows/s (median)": rows[key], "vs sequential": rows[key] / rows[seq],
              "shuffled float32 loader vs this": rows["shuffled"] / rows[key], "target": target, "note": note}
             for label, key, seq, target, note in out]
    seq = rows["sequential32"]
    if hf is not None:
        table.append({"loader": "🤗 datasets Arrow table, torch format", "rows/s (median)": rows["hf"],
                      "vs sequential": rows["hf"] / seq,
                      "shuffled float32 loader vs this": rows["shuffled"] / rows["hf"],
                      "target": None, "note": hf_note})
    else:
        table.append({"loader": "🤗 datasets Arrow table, torch format", "rows/s (median)": None,
                      "vs sequential": None, "shuffled float32 loader vs this": None, "target": None, "note": hf_note})
    return table


def xarray_slice(workdir: str, n: int, d: int) -> list[dict]:
    """Chunks read by ``db.reps(...).to_xarray()`` (build) and ``.sel(layer=3).values`` (slice)."""
    from actdb.store import arrays as A

    db = actdb.open(str(Path(workdir) / "xr"))
    db.add_dataset("texts", [f"text {i}" for i in range(n)])
    with db.session():
        for step in (1, 2):
            db.add_checkpoint("m", f"step{step}", step=step)
            for layer in range(4):
                db.write_rep("m", f"step{step}", "texts", f"hidden.{layer}", activation_like(n, d), pooling="mean")
    counts: dict[str, int] = {}
    original = A.RepArray.read_stored

    def counting(self: A.RepArray, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.shape[0])
        if stop > start:
            counts[self.path] = counts.get(self.path, 0) + (stop - 1) // self.chunk_rows - start // self.chunk_rows + 1
        return original(self, start, stop)

    A.RepArray.read_stored = counting  # type: ignore[method-assign]
    try:
        x = db.reps(model="m").to_xarray()
        built = sum(counts.values())
        x.sel(layer=3).values  # noqa: B018
    finally:
        A.RepArray.read_stored = original  # type: ignore[method-assign]
    layer3 = [r for r in db.reps(model="m") if r.layer == 3]
    expected = sum(-(-r.n_rows // r.chunk_rows) for r in layer3)
    total = sum(-(-r.n_rows // r.chunk_rows) for r in db.reps(model="m"))
    read_paths = set(counts)
    db.close()
    return [{"to_xarray": f"db.reps(model='m').to_xarray() {tuple(x.dims)} {tuple(x.shape)}",
             "chunks read on build": built, "chunks read by .sel(layer=3).values": sum(counts.values()),
             "layer 3's chunks": expected, "chunks in the selection": total,
             "only layer 3's reps read": read_paths == {r.path for r in layer3},
             "target": "0 on build; exactly layer 3's chunks"}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, every path once (CI)")
    ap.add_argument("--mib", type=float, default=256, help="size of the rep in MiB (float16)")
    args = ap.parse_args()
    repeat = 1 if args.tiny else 5
    d = 768
    n = 4096 if args.tiny else int(args.mib * 2**20 / (d * 2))
    workdir = tempfile.mkdtemp(prefix="actdb-bench-", dir=os.environ.get("ACTDB_BENCH_DIR"))
    try:
        db, x = make_store(workdir, n, d)
        print(f"## Read-back of one rep: {n:,} x {d} float16 ({x.nbytes / 2**20:.0f} MiB), "
              f"median of {repeat} interleaved rounds, {os.cpu_count()} cores\n")
        print(markdown_table(whole_rep(db, repeat)))
        print(f"\n## Row batches of {BATCH} for a probe or an SAE (one epoch)\n")
        print(markdown_table(loader_table(db, x, workdir, repeat, naive_batches=2 if args.tiny else 8)))
        print("\n## Many reps as one lazy DataArray: what a slice reads (counted)\n")
        print(markdown_table(xarray_slice(workdir, 16384, 128 if args.tiny else d)))
        db.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
