"""The accumulation kernel: rows of P reps centred and multiplied into float64 running sums.

One sub-chunk of rows is centred into ``C = [U_1 … U_P]`` (``rows × D``, in the product
dtype) and the upper block-triangle of ``CᵀC`` is added to the blocks an accumulator holds.
Fused (the whole ``D × D`` product fits one panel): rows are centred ``ROW_BLOCK`` at a time
and each block is added by a SYRK with β = 1 (:mod:`actdb.query.moments.blas`) while it is
in cache. Otherwise the sub-chunk is centred first and multiplied one row panel per group of
reps (SYRK for the panel's square, one GEMM per run of wanted reps to its right). Mixed
precision recomputes the products among each rep's heaviest columns in float64
(:class:`HeavyColumns`). Also the tiling helpers the blocks need (mirror, symmetrise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

import numpy as np

from actdb.errors import InvalidInput
from actdb.query.moments.blas import syrk_accumulate, syrk_available
from actdb.query.moments.inputs import MEASURE_FIX
from actdb.store.parse import check_finite

#: With ``precision="mixed"``, totals of at most this many columns still use float64 products.
MIXED_MIN_WIDTH = 256
#: With ``precision="mixed"``, products among each rep's this-many largest-variance columns
#: are recomputed in float64 (they dominate the Frobenius norms of outlier-heavy activations).
HEAVY_PER_REP = 32
#: Rows centred and multiplied at a time while they are in cache (see :func:`accumulate`).
ROW_BLOCK = 1024


class Sums(Protocol):
    """The running sums the kernel adds rows into (what a ``Moments`` holds): ``n``; the
    shift ``center`` and ``sum_u`` ``(D,)``; the blocks ``U_iᵀU_j`` by ``(i, j)``, ``i ≤ j``;
    the row-norm sums ``w`` ``(P,)``, ``v`` ``(P, D)``, ``q`` ``(P, P)``."""

    dims: tuple[int, ...]
    offsets: np.ndarray
    n: int
    center: np.ndarray
    sum_u: np.ndarray
    blocks: dict[tuple[int, int], np.ndarray]
    w: np.ndarray
    v: np.ndarray
    q: np.ndarray

    @property
    def row_norms(self) -> bool: ...


@dataclass(frozen=True)
class HeavyColumns:
    """Each rep's ``HEAVY_PER_REP`` largest-variance columns, chosen once (on the first
    ``ROW_BLOCK`` rows in float32), whose mutual products are computed in float64.

    ``columns``: their global indices, reps concatenated ``(H,)``; ``local[p]``: rep p's
    ones as indices within the rep; ``positions[p]``: where rep p's ones sit in ``columns``.
    """

    columns: np.ndarray
    local: tuple[np.ndarray, ...]
    positions: tuple[np.ndarray, ...]


def product_dtype(precision: str, total: int) -> np.dtype:
    """float32 for ``precision="mixed"`` when ``D`` is large enough that it pays (below
    ``MIXED_MIN_WIDTH`` total columns float64 is cheap and exact), else float64."""
    return np.dtype(np.float32 if precision == "mixed" and total > MIXED_MIN_WIDTH else np.float64)


def sub_chunk_rows(budget_bytes: int, work: np.dtype, total: int) -> int:
    """Rows per sub-chunk: its ``rows × D`` buffer in ``work`` fits half of ``budget_bytes``."""
    return max(1, budget_bytes // (2 * work.itemsize * total))


def panels(offsets: np.ndarray, budget_bytes: int, work: np.dtype) -> list[tuple[int, int]]:
    """Consecutive rep ranges ``[a, b)`` whose product panel ``(d_a..b) × D`` in the work
    dtype fits in half of ``budget_bytes`` (at least one rep each)."""
    reps, total = len(offsets) - 1, int(offsets[-1])
    cap = max(1, (budget_bytes // 2) // (work.itemsize * total))
    out, a = [], 0
    while a < reps:
        b = a + 1
        while b < reps and offsets[b + 1] - offsets[a] <= cap:
            b += 1
        out.append((a, b))
        a = b
    return out


def first_shift(mats: Sequence[np.ndarray], row0: int) -> np.ndarray:
    """The shift of an empty accumulator: the column means ``(D,)`` of the first ``ROW_BLOCK``
    rows (only nearness matters, any shift is exact algebra), in the input's own width."""
    center = np.concatenate([
        np.asarray(m[:ROW_BLOCK].mean(axis=0, dtype=np.result_type(m.dtype, np.float32)), dtype=np.float64)
        for m in mats
    ])
    if not np.isfinite(center).all():
        raise_non_finite(mats, row0)
    return center


def accumulate(acc: Sums, mats: Sequence[np.ndarray], work: np.dtype, budget_bytes: int,
               heavy: HeavyColumns | None) -> HeavyColumns | None:
    """Add rows ``mats[p]`` ``(rows, d_p)`` (checked shapes; ``acc.center`` set, float32-exact
    for float32 products) into ``acc``, a sub-chunk at a time; the heavy columns of mixed
    precision (chosen on the first call: pass back what it returns)."""
    rows, total = mats[0].shape[0], int(acc.offsets[-1])
    step = sub_chunk_rows(budget_bytes, work, total)
    fused = syrk_available() and len(panels(acc.offsets, budget_bytes, work)) == 1
    buf = np.empty((min(ROW_BLOCK if fused else step, rows), total), dtype=work)
    for start in range(0, rows, step):
        sub = [m[start:start + step] for m in mats]
        heavy = _update_rows(acc, sub, buf, acc.n, fused, heavy, budget_bytes)
    return heavy


def _update_rows(acc: Sums, mats: list[np.ndarray], buf: np.ndarray, row0: int, fused: bool,
                 heavy: HeavyColumns | None, budget_bytes: int) -> HeavyColumns | None:
    """Accumulate one sub-chunk of rows. ``buf`` is scratch in the product dtype (float64,
    or float32 for mixed precision): ``ROW_BLOCK × D`` when ``fused`` (every block fits
    one product panel), else ``rows × D``.

    Rows are centred ``ROW_BLOCK`` at a time, and each block's column sums, heavy-column
    products and row norms are taken while it is in cache. ``fused``: the block's
    ``UᵀU`` is added to a ``D × D`` product right away (SYRK with β = 1), so the centred
    copy never goes back to memory; otherwise the whole sub-chunk is centred first and
    multiplied panel by panel. Nothing is added to ``acc`` before the sub-chunk is
    known to be finite."""
    rows = mats[0].shape[0]
    work = buf.dtype
    mixed = work == np.float32
    c_work = acc.center.astype(work)
    total, reps = int(acc.offsets[-1]), len(acc.dims)
    sl = _slices(acc.offsets)
    colsum = np.zeros(total)
    hh, heavy_sum = None, None
    w, v, q = np.zeros(reps), np.zeros((reps, total)), np.zeros((reps, reps))
    product = np.zeros((total, total), dtype=work) if fused else None
    block = buf.shape[0] if fused else rows
    for r in range(0, rows, block):
        u = buf[: min(block, rows - r)]  # unfused: one block, the whole sub-chunk
        for p, m in enumerate(mats):
            # float16/float32 (and small ints) subtract a float32 shift exactly-then-rounded;
            # wider inputs are centred in float64 first, then rounded to the work dtype.
            narrow = np.result_type(m.dtype, np.float32) == np.float32
            with np.errstate(over="ignore", invalid="ignore"):  # checked below
                np.subtract(m[r:r + u.shape[0]], c_work[sl[p]] if narrow else acc.center[sl[p]],
                            out=u[:, sl[p]], casting="same_kind")
        with np.errstate(over="ignore", invalid="ignore"):
            colsum += column_sums(u)
            if mixed:
                if heavy is None:
                    heavy = choose_heavy(u, acc.dims, acc.offsets)
                uh = np.take(u, heavy.columns, axis=1).astype(np.float64)
                # the heavy × heavy entries exactly (float32 products fit float64)
                if hh is None:
                    hh, heavy_sum = np.zeros((len(heavy.columns),) * 2), np.zeros(len(heavy.columns))
                hh += uh.T @ uh
                heavy_sum += uh.sum(axis=0)
            if acc.row_norms:
                rho = np.stack([np.einsum("ij,ij->i", u[:, sl[p]], u[:, sl[p]]) for p in range(reps)], axis=1)
                rho64 = rho.astype(np.float64)
                w += rho64.sum(axis=0)
                v += rho.T @ u
                q += rho64.T @ rho64
        if product is not None:
            syrk_accumulate(u, product)  # upper triangle += uᵀu while u is in cache
    if mixed and heavy is not None:
        colsum[heavy.columns] = heavy_sum  # the dominant columns' sums exactly
    if not np.isfinite(colsum).all():
        raise_non_finite(mats, row0)
    acc.n += rows
    acc.sum_u += colsum
    if acc.row_norms:
        acc.w += w
        acc.v += v
        acc.q += q
    pinned = heavy if mixed else None
    if product is not None:
        for p in range(reps):  # SYRK filled the upper triangle; the diagonal blocks need both
            mirror_upper(product[sl[p], sl[p]])
        _add_products(acc, [(0, reps, product)], 0, reps, hh, pinned)
        return heavy
    for a, b in panels(acc.offsets, budget_bytes, work):
        _panel_products(acc, buf[:rows], a, b, hh, pinned)
    return heavy


def _panel_products(acc: Sums, u: np.ndarray, a: int, b: int, hh: np.ndarray | None,
                    heavy: HeavyColumns | None) -> None:
    """Accumulate the wanted blocks ``(i, j)``, ``a ≤ i < b``, ``j ≥ i``: SYRK for the panel's
    own square (when any of its blocks is wanted), one GEMM per run of consecutive wanted
    reps to its right."""
    off = acc.offsets
    lo, mid = int(off[a]), int(off[b])
    g = u[:, lo:mid]
    want = {j for i in range(a, b) for j in range(i, len(acc.dims)) if (i, j) in acc.blocks}
    if not want:
        return
    products: list[tuple[int, int, np.ndarray]] = []  # (first rep, end rep, g.T @ u[:, reps])
    if any(j < b for j in want):
        products.append((a, b, g.T @ g))  # same buffer transposed: numpy calls SYRK
    right = sorted(j for j in want if j >= b)
    for c, e in _runs(right):
        products.append((c, e, g.T @ u[:, int(off[c]):int(off[e])]))
    _add_products(acc, products, a, b, hh, heavy)


def _add_products(acc: Sums, products: list[tuple[int, int, np.ndarray]], a: int, b: int,
                  hh: np.ndarray | None, heavy: HeavyColumns | None) -> None:
    """Add product panels (first rep ``c``, end rep ``e``, ``U_{a..b}ᵀ U_{c..e}``) into the
    float64 blocks they hold, with the heavy × heavy entries replaced by their float64
    values ``hh``."""
    off = acc.offsets
    for c, e, prod in products:
        for i in range(a, b):
            r0 = int(off[i] - off[a])
            for j in range(max(i, c), e):
                dst = acc.blocks.get((i, j))
                if dst is None:
                    continue
                c0 = int(off[j] - off[c])
                part = prod[r0:r0 + acc.dims[i], c0:c0 + acc.dims[j]]
                dst += part
                if hh is not None and heavy is not None:
                    hi, hj = heavy.local[i], heavy.local[j]
                    pi, pj = heavy.positions[i], heavy.positions[j]
                    dst[np.ix_(hi, hj)] += hh[np.ix_(pi, pj)] - part[np.ix_(hi, hj)]


def choose_heavy(u: np.ndarray, dims: Sequence[int], offsets: np.ndarray) -> HeavyColumns:
    """The ``HEAVY_PER_REP`` largest-variance columns of each rep, from the first
    ``ROW_BLOCK`` rows of the (nearly) centred ``u``: ``Σu²`` ranks the columns by variance."""
    head = u[:ROW_BLOCK]
    var = np.einsum("ij,ij->j", head, head)
    local, glob, pos, k = [], [], [], 0
    for p, sl in enumerate(_slices(offsets)):
        h = min(HEAVY_PER_REP, dims[p])
        idx = np.sort(np.argsort(var[sl], kind="stable")[::-1][:h])
        local.append(idx)
        glob.append(idx + sl.start)
        pos.append(np.arange(k, k + h))
        k += h
    return HeavyColumns(np.concatenate(glob), tuple(local), tuple(pos))


def raise_non_finite(mats: Sequence[np.ndarray], row0: int) -> NoReturn:
    """Name the first non-finite value's rep and row (counted over every row the
    accumulator has seen), or say the float32 products overflowed."""
    for p, m in enumerate(mats):
        check_finite(m, what=f"rep {p}", fix=MEASURE_FIX, first_row=row0)
    raise InvalidInput("values overflow float32 products; use precision='float64' for data this large")


# ---------------------------------------------------------------------- tiling helpers
def mirror_upper(a: np.ndarray, tile: int = 256) -> None:
    """Copy the upper triangle of the square ``a`` onto its lower one, in place, tile pair by
    tile pair so every transposed read stays in cache."""
    d = a.shape[0]
    for r in range(0, d, tile):
        diag = a[r:r + tile, r:r + tile]
        np.copyto(diag, diag.T.copy(), where=np.tri(diag.shape[0], k=-1, dtype=bool))
        for c in range(r + tile, d, tile):
            a[c:c + tile, r:r + tile] = a[r:r + tile, c:c + tile].T


def symmetrise(b: np.ndarray, tile: int = 256) -> None:
    """``b ← (b + bᵀ)/2`` in place: the upper triangle averaged tile pair by tile pair (a
    whole-matrix transposed copy is cache-hostile; docs/measures.md), then mirrored."""
    d = b.shape[0]
    for r in range(0, d, tile):
        for c in range(r, d, tile):
            upper = b[r:r + tile, c:c + tile]
            upper += b[c:c + tile, r:r + tile].T.copy()  # a copy: on the diagonal the two overlap
            upper *= 0.5
    mirror_upper(b, tile)


def column_sums(u: np.ndarray) -> np.ndarray:
    """Column sums of a C-contiguous chunk in float64. A float32 chunk is summed 16 rows at
    a time in float32 first (half the time of a float64 reduction; each partial sum is off by
    at most ~16 ulp, far below the float32 products' own rounding), then in float64."""
    rows = u.shape[0] // 16 * 16
    if u.dtype != np.float32 or rows == 0 or not u.flags.c_contiguous:
        whole: np.ndarray = u.sum(axis=0, dtype=np.float64)
        return whole
    head: np.ndarray = u[:rows].reshape(-1, 16, u.shape[1]).sum(axis=1).sum(axis=0, dtype=np.float64)
    both: np.ndarray = head + u[rows:].sum(axis=0, dtype=np.float64)
    return both


def _slices(offsets: np.ndarray) -> list[slice]:
    return [slice(int(offsets[p]), int(offsets[p + 1])) for p in range(len(offsets) - 1)]


def _runs(idx: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted indices as ``[start, end)`` runs of consecutive values."""
    out: list[tuple[int, int]] = []
    for k in idx:
        if out and out[-1][1] == k:
            out[-1] = (out[-1][0], k + 1)
        else:
            out.append((k, k + 1))
    return out
