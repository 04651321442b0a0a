"""Benchmark actdb's measures against peer libraries and a plain NumPy textbook.

Run ``python bench/measures.py`` (full, minutes) or ``python bench/measures.py --tiny``
(every code path once at tiny sizes, seconds; what CI runs). Prints the machine's float32
GEMM rate, the lower bound it implies for one linear-CKA pair
(``2·n·(d1·d2 + d1²/2 + d2²/2)`` flops), and a markdown table of results. Peers that are not
installed are skipped with a message; a peer that would need > 8 GiB or > 90 s is skipped
with a printed estimate.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from actdb.query import measures as M
from actdb.query.moments import Moments

MEM_LIMIT = 8 * 2**30
TIME_LIMIT = 90.0
ROWS: list[dict[str, Any]] = []


def activations(n: int, d: int, seed: int) -> np.ndarray:
    """float32 ``(n, d)``: low-rank + noise with 4 large-mean, large-variance outlier columns."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 32), dtype=np.float32) @ rng.standard_normal((32, d), dtype=np.float32)
    x += rng.standard_normal((n, d), dtype=np.float32)
    x[:, :4] = 20 * x[:, :4] + 30
    return x


def timed(f: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def gemm_rate(n: int = 4096) -> float:
    """Measured float32 GEMM rate (flop/s) on ``n × n`` matrices."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    t, _ = timed(lambda: a @ b, 3)
    return 2.0 * n**3 / t


def textbook_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Plain NumPy float64 feature-space linear CKA (Kornblith et al. 2019, eq. 5)."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    x -= x.mean(0)
    y -= y.mean(0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def cka_pytorch_minibatch(x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    """cka-pytorch's estimator (its own ``gram`` and ``hsic1``: minibatch unbiased HSIC)."""
    import torch
    from cka_pytorch.hsic import hsic1
    from cka_pytorch.utils import gram

    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    xy = xx = yy = 0.0
    for a in range(0, x.shape[0] - batch + 1, batch):
        gx, gy = gram(tx[a:a + batch].double()), gram(ty[a:a + batch].double())
        xy += float(hsic1(gx[None], gy[None]).sum())
        xx += float(hsic1(gx[None], gx[None]).sum())
        yy += float(hsic1(gy[None], gy[None]).sum())
    return xy / np.sqrt(xx * yy)


def record(case: str, impl: str, seconds: float | None, value: float | None, ref: float | None,
           note: str = "") -> None:
    err = None if value is None or ref is None else abs(value - ref)
    ROWS.append({"case": case, "impl": impl, "s": seconds, "value": value, "err": err, "note": note})
    shown = "skipped" if seconds is None else f"{seconds:8.3f} s"
    print(f"  {impl:28s} {shown}  {'' if err is None else f'|err|={err:.1e}'} {note}", flush=True)


def pair_case(n: int, d: int, rate: float) -> None:
    case = f"linear CKA, 1 pair, n={n}, d={d}"
    print(case)
    x, y = activations(n, d, 1), activations(n, d, 2)
    y += 0.5 * x
    bound = 2.0 * n * (d * d + d * d / 2 + d * d / 2) / rate
    t_ref, ref = timed(lambda: textbook_cka(x, y))
    record(case, "lower bound (fp32 GEMM)", bound, None, None)
    record(case, "numpy textbook float64", t_ref, ref, ref)
    for prec in ("float64", "mixed"):
        t, v = timed(lambda: M.linear_cka(x, y, precision=prec), 2)
        record(case, f"actdb ({prec})", t, v, ref, f"{t / bound:.2f}x bound")
    try:
        import cka_pytorch  # noqa: F401
    except ImportError:
        record(case, "cka-pytorch", None, None, None, "not installed")
    else:
        t, v = timed(lambda: cka_pytorch_minibatch(x, y))
        record(case, "cka-pytorch (minibatch 256)", t, v, ref)
    need = 3 * n * n * 8
    try:
        import repsim
    except ImportError:
        record(case, "repsim", None, None, None, "not installed")
    else:
        est = 3 * 2 * n * n * d / 5e10
        if need > MEM_LIMIT or est > TIME_LIMIT:
            record(case, "repsim (n×n Grams)", None, None, None,
                   f"skipped: needs ~{need / 2**30:.0f} GiB, ~{est:.0f} s")
        else:
            t, v = timed(lambda: float(repsim.cka([x.astype(np.float64), y.astype(np.float64)], "linear", "gretton")[0, 1]))
            record(case, "repsim (n×n Grams)", t, v, ref)


def layer_matrix_case(n: int, d: int, layers: int) -> None:
    case = f"{layers}x{layers} layer matrix, n={n}, d={d}"
    print(case)
    reps = [activations(n, d, s) for s in range(layers)]
    for s in range(1, layers):
        reps[s] += 0.7 * reps[s - 1]
    def ours(prec: str) -> np.ndarray:
        m = Moments.empty([d] * layers, precision=prec).update(reps)  # each rep read once
        pm = {(i, j): m.pair(i, j) for i in range(layers) for j in range(i, layers)}
        return np.array([[M.REGISTRY["linear_cka"].from_moments(pm[min(i, j), max(i, j)])  # type: ignore[misc]
                          for j in range(layers)] for i in range(layers)])
    t_ref, ref = timed(lambda: np.array([[textbook_cka(a, b) for b in reps] for a in reps]))
    record(case, "numpy textbook float64", t_ref, float(ref.sum()), float(ref.sum()), "sum over matrix")
    for prec in ("float64", "mixed"):
        t, v = timed(lambda: ours(prec))
        record(case, f"actdb ({prec})", t, float(v.sum()), float(ref.sum()),
               f"max abs err {np.abs(v - ref).max():.1e}")
    try:
        import cka_pytorch  # noqa: F401
    except ImportError:
        record(case, "cka-pytorch", None, None, None, "not installed")
    else:
        t0, v0 = timed(lambda: cka_pytorch_minibatch(reps[0], reps[1]))
        pairs = layers * (layers + 1) // 2
        record(case, "cka-pytorch (minibatch 256)", t0 * pairs, None, None,
               f"estimate: {pairs} pairs × {t0:.2f} s/pair, abs err one pair {abs(v0 - ref[0, 1]):.1e}")


def streamed_memory_case(n: int, d: int, chunk: int) -> None:
    case = f"peak memory, 1 pair streamed, n={n:,}, d={d}"
    print(case)
    base = [activations(chunk, d, 1), activations(chunk, d, 2)]
    def chunks() -> Iterator[list[np.ndarray]]:
        for a in range(0, n, chunk):
            rows = min(chunk, n - a)
            yield [base[0][:rows] + np.float32(a % 7), base[1][:rows]]
    gc.collect()
    tracemalloc.start()
    t = time.perf_counter()
    m = Moments.from_chunks(chunks(), [d, d])
    value = M.REGISTRY["linear_cka"].from_moments(m.pair(0, 1))  # type: ignore[misc]
    t = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    beyond = (peak - m.nbytes()) / 2**20
    record(case, "actdb (float64)", t, value, None,
           f"peak {peak / 2**20:.0f} MiB traced, {beyond:.0f} MiB beyond accumulators ({m.nbytes() / 2**20:.0f} MiB)")


def rsa_case(n: int, d: int) -> None:
    case = f"RSA (Spearman, correlation RDM), n={n}, d={d}"
    print(case)
    x, y = activations(n, d, 1).astype(np.float64), activations(n, d, 2).astype(np.float64)
    t, v = timed(lambda: M.rsa(x, y))
    try:
        import rsatoolbox
    except ImportError:
        record(case, "actdb", t, v, v)
        record(case, "rsatoolbox", None, None, None, "not installed")
        return
    def peer() -> float:
        d1 = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(x), method="correlation")
        d2 = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(y), method="correlation")
        return float(rsatoolbox.rdm.compare(d1, d2, method="spearman")[0, 0])
    tp, vp = timed(peer)
    record(case, "actdb", t, v, vp)
    record(case, "rsatoolbox", tp, vp, vp)


def table() -> str:
    lines = ["| case | implementation | time (s) | abs. error vs float64 | note |", "|---|---|---|---|---|"]
    for r in ROWS:
        s = "—" if r["s"] is None else f"{r['s']:.3f}"
        e = "—" if r["err"] is None else f"{r['err']:.1e}"
        lines.append(f"| {r['case']} | {r['impl']} | {s} | {e} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="every code path once at tiny sizes")
    args = ap.parse_args(argv)
    rate = gemm_rate(512 if args.tiny else 4096)
    print(f"float32 GEMM rate: {rate / 1e9:.1f} GFLOP/s")
    if args.tiny:
        pair_case(1024, 32, rate)
        layer_matrix_case(512, 16, 4)
        streamed_memory_case(20_000, 32, 4096)
        rsa_case(200, 16)
    else:
        for n in (8192, 65536):
            for d in (384, 768, 2048):
                pair_case(n, d, rate)
        layer_matrix_case(8192, 768, 13)
        streamed_memory_case(1_000_000, 768, 8192)
        rsa_case(2048, 768)
    print()
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
