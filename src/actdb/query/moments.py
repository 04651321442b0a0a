"""Streaming sufficient statistics for P row-aligned representations.

A :class:`Moments` holds everything the moments-route measures need about P matrices
``X_1 … X_P`` (each ``(n, d_p)``) that share their rows, accumulated over row chunks:

- ``n`` rows and, per column, the running sum (as a shift ``center`` plus ``sum_u``);
- every cross-product block ``U_pᵀ U_q`` (p ≤ q) of the shifted features ``U = X − center``;
- for debiased CKA, per-row squared norms ``ρ_p(i) = ‖u_p(i)‖²`` and their sums
  ``w_p = Σ_i ρ_p(i)``, ``V_p = Σ_i ρ_p(i) u(i)`` (over all D columns), ``Q_pq = Σ_i ρ_p(i) ρ_q(i)``
  (``row_norms=False`` leaves them out, as NaN: every other measure does without, and
  they cost two passes over each chunk).

All accumulators are float64, whatever the input dtype. The shift ``center`` is fixed at the
first update (the column mean of the first chunk's first 1,024 rows), so later chunks are
nearly centred and the uncentred sums do not cancel catastrophically for activations with
large-mean outlier dimensions; statistics are re-expressed around the exact mean only when
a pair is read. Re-expressing around another centre is exact algebra
(:meth:`Moments.recentered`), which is what makes ``a + b`` and ``a - b`` exact merges of
accumulators built with different shifts.

One update centres the chunk's features into ``C = [U_1 … U_P]`` and computes the upper
block-triangle of ``CᵀC``, so the total work is ``n·D²`` flops for ``D = Σ d_p`` and each
representation is read once. When the whole ``D × D`` product fits in half of
``budget_bytes`` (one pair up to d ≈ 2,900 in float32 at the default 256 MiB), the rows are
centred ``ROW_BLOCK`` at a time and each block is added to it by a BLAS SYRK with β = 1
(numpy's own OpenBLAS, see ``actdb.query._blas``) while the block is still in cache: the
centred copy never makes a round trip through memory, which is what a single-threaded
centring pass costs otherwise (~25% of the products at d = 384). Wider sets (a 13-layer
matrix) are centred a sub-chunk at a time and multiplied one row panel per representation
(``U_pᵀ [U_p … U_P]``: SYRK for the panel's square, one GEMM to its right), the panels bounded
by ``budget_bytes``.

``precision="float64"`` (default) runs the products in float64 and matches the float64
textbook formula to ~1e-14. ``precision="mixed"`` runs them in float32 (about twice the
float64 rate): each chunk is centred by a float32-exact shift (float16/float32 input: ``x − c``
is then the correctly rounded exact difference; float64 input is centred in float64 first),
the products of each panel are accumulated into float64 per row sub-chunk, and the products
among each rep's ``HEAVY_PER_REP`` largest-variance columns (chosen on the first chunk) are
recomputed in float64 and replace the float32 ones: outlier dimensions dominate the Frobenius
norms that CKA divides, and their float32 error would otherwise not average out. Below
``MIXED_MIN_WIDTH`` total columns mixed uses float64 (cheap and exact). Measured CKA error vs
float64: ≤ 1e-8 at every shape in ``tests/query/test_moments.py`` and ``bench/measures.py``
(worst seen ~8e-9, on isotropic data with CKA ≈ 0.9999; ~1e-10 on activation-like data).
float64 input is rounded to float32 once centred (~6e-8 relative per value), so on
ill-conditioned float64 data mixed can be off by a few 1e-8; mixed is meant for the float16 /
float32 activations a store holds.

``pairs=`` restricts the work to the blocks some pairs need (a plan that compares each
checkpoint with the final one, or only the pairs not yet cached, does a fraction of the
``n·D²`` flops); ``skip_diag=`` leaves out reps' own blocks that a per-rep cache supplies
afterwards through :meth:`Moments.set_rep` (what :meth:`Moments.rep` extracted earlier).
The statistics around the exact mean are computed once per accumulator state and shared
by every :meth:`Moments.pair` read (read-only arrays).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from actdb.errors import InvalidInput, NonFinite
from actdb.query._blas import syrk_accumulate, syrk_available

Precision = Literal["float64", "mixed"]
DEFAULT_BUDGET_BYTES = 256 * 2**20
#: With ``precision="mixed"``, totals of at most this many columns still use float64 products.
MIXED_MIN_WIDTH = 256
#: With ``precision="mixed"``, products among each rep's this-many largest-variance columns
#: are recomputed in float64 (they dominate the Frobenius norms of outlier-heavy activations).
HEAVY_PER_REP = 32
#: Rows centred and multiplied at a time while they are in cache (see ``_update_rows``).
ROW_BLOCK = 1024
_FORMAT_VERSION = 1


def to_numpy(a: Any, name: str = "X") -> np.ndarray:
    """``a`` as a 2-D numeric numpy array ``(n, d)`` in its own dtype (no float64 copy yet).

    Torch tensors are recognised by duck typing (``detach``/``cpu``), so torch is never
    imported here; bfloat16/float16 tensors are widened to float32 (numpy has no bfloat16).
    A 1-D input becomes one column. Raises :class:`InvalidInput` for non-numeric or >2-D input.
    """
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        t = a.detach().cpu()
        if str(getattr(t, "dtype", "")) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        a = t.numpy()
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiub":
        raise InvalidInput(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be a 2-D (n_rows, d) array, got shape {arr.shape}")
    return arr


def as_matrix(a: Any, name: str = "X", *, check_finite: bool = True) -> np.ndarray:
    """:func:`to_numpy` then float64; raises :class:`NonFinite` naming the first bad row."""
    out = np.asarray(to_numpy(a, name), dtype=np.float64)
    if check_finite:
        check_all_finite(out, name)
    return out


def check_all_finite(arr: np.ndarray, name: str, first_row: int = 0) -> None:
    """Raise :class:`NonFinite` naming the first row of ``arr`` holding NaN or Inf (rows are
    numbered from ``first_row``: a chunk's place in a stream)."""
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise NonFinite(
            f"{name} contains NaN or Inf (first at row {first_row + int(np.argmin(finite))}); drop or "
            "repair those rows before computing a measure"
        )


@dataclass(frozen=True)
class PairMoments:
    """Centred second moments of one pair (X, Y), all float64, around the exact means.

    Attributes: ``n``; ``mean_x`` ``(d1,)``; ``mean_y`` ``(d2,)``; ``sxx = X̃ᵀX̃`` ``(d1, d1)``,
    ``syy`` ``(d2, d2)``, ``sxy = X̃ᵀỸ`` ``(d1, d2)`` with ``X̃`` the column-centred X (sums, not
    divided by n); for debiased CKA, with ``k_i = ‖x̃_i‖²`` and ``l_i = ‖ỹ_i‖²``:
    ``sum_kk = Σk_i²``, ``sum_ll = Σl_i²``, ``sum_kl = Σk_i l_i``.
    """

    n: int
    mean_x: np.ndarray
    mean_y: np.ndarray
    sxx: np.ndarray
    syy: np.ndarray
    sxy: np.ndarray
    sum_kk: float
    sum_ll: float
    sum_kl: float

    @property
    def dims(self) -> tuple[int, int]:
        return (self.sxx.shape[0], self.syy.shape[0])

    def swapped(self) -> PairMoments:
        """The moments of (Y, X)."""
        return PairMoments(
            self.n, self.mean_y, self.mean_x, self.syy, self.sxx, self.sxy.T,
            self.sum_ll, self.sum_kk, self.sum_kl,
        )


class Moments:
    """Mergeable float64 sufficient statistics of P row-aligned representations.

    Build with :meth:`empty` then :meth:`update` per chunk, or :meth:`from_chunks` over an
    iterable; combine partial results with ``+`` (and ``-`` to remove a shard, used by the
    jackknife); read one pair with :meth:`pair`; persist with :meth:`to_arrays` /
    :meth:`from_arrays` (a dict of numpy arrays, ``np.savez``-ready) or :meth:`to_bytes`.
    """

    def __init__(
        self,
        dims: Sequence[int],
        *,
        n: int,
        center: np.ndarray,
        sum_u: np.ndarray,
        blocks: dict[tuple[int, int], np.ndarray],
        w: np.ndarray,
        v: np.ndarray,
        q: np.ndarray,
        precision: Precision = "float64",
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        self.dims = tuple(int(d) for d in dims)
        self.offsets = np.concatenate([[0], np.cumsum(self.dims)]).astype(int)
        self.n = int(n)
        self.center = center
        self.sum_u = sum_u
        self.blocks = blocks
        self.w = w
        self.v = v
        self.q = q
        self.precision: Precision = _parse_precision(precision)
        self.budget_bytes = int(budget_bytes)
        self._heavy: tuple[np.ndarray, list[np.ndarray], list[np.ndarray]] | None = None
        self._centred: Moments | None = None  # memo of recentered(mean()), see pair()
        self._settled = False  # centred in place and read-only (see settle())

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(
        cls,
        dims: Sequence[int],
        *,
        precision: Precision = "float64",
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        pairs: Iterable[tuple[int, int]] | None = None,
        skip_diag: Iterable[int] = (),
        row_norms: bool = True,
    ) -> Moments:
        """An accumulator with no rows for representations of widths ``dims``.

        ``pairs`` (rep-index pairs, ``i == j`` allowed; default: all) limits the work to the
        blocks those pairs need: the listed cross blocks and the diagonal block of every rep
        that appears — a plan comparing each checkpoint with the final one, or only the pairs
        not yet cached, does a fraction of the ``n·D²`` flops. ``skip_diag`` lists reps whose
        own (diagonal) block is not accumulated at all because the caller has it already
        (a per-rep cache); supply it with :meth:`set_rep` before reading a pair.
        ``row_norms=False`` skips the row-norm sums only debiased CKA reads (they stay NaN).
        """
        dims = tuple(int(d) for d in dims)
        if not dims or any(d < 1 for d in dims):
            raise InvalidInput(f"dims must be a non-empty list of positive widths, got {dims}")
        total = sum(dims)
        p = len(dims)
        keys = _block_keys(p, pairs, skip_diag)
        blocks = {(i, j): np.zeros((dims[i], dims[j])) for i, j in keys}
        start = 0.0 if row_norms else np.nan
        return cls(
            dims, n=0, center=np.zeros(total), sum_u=np.zeros(total), blocks=blocks,
            w=np.full(p, start), v=np.full((p, total), start), q=np.full((p, p), start),
            precision=precision, budget_bytes=budget_bytes,
        )

    @classmethod
    def from_chunks(
        cls,
        chunks: Iterable[Sequence[Any]],
        dims: Sequence[int],
        *,
        precision: Precision = "float64",
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> Moments:
        """Stream an iterable of chunk tuples (one ``(rows, d_p)`` array per rep, same rows)."""
        m = cls.empty(dims, precision=precision, budget_bytes=budget_bytes)
        for chunk in chunks:
            m.update(chunk)
        return m

    @property
    def n_reps(self) -> int:
        return len(self.dims)

    @property
    def row_norms(self) -> bool:
        """Whether the row-norm sums (debiased CKA's) were accumulated (a merge with an
        accumulator without them has none)."""
        return bool(np.isfinite(self.w).all())

    def _slice(self, p: int) -> slice:
        return slice(int(self.offsets[p]), int(self.offsets[p + 1]))

    def block(self, i: int, j: int) -> np.ndarray:
        """``U_iᵀU_j`` around the current shift ``center`` (not the mean)."""
        return self.blocks[(i, j)] if i <= j else self.blocks[(j, i)].T

    def has_pair(self, i: int, j: int) -> bool:
        """Whether every block pair ``(i, j)`` needs was accumulated (see ``pairs=``)."""
        return all(_key(a, b) in self.blocks for a, b in ((i, i), (j, j), (i, j)))

    # ------------------------------------------------------------------ accumulation
    def update(self, chunks: Sequence[Any]) -> Moments:
        """Add one chunk of rows: ``chunks[p]`` is ``(rows, d_p)`` for rep p (numpy or torch,
        any float dtype). Large chunks are split so the working buffer (``rows × D`` in the
        product dtype) stays within half of ``budget_bytes`` and the product panels within the
        other half. Returns ``self``."""
        if len(chunks) != self.n_reps:
            raise InvalidInput(f"update needs {self.n_reps} arrays (one per rep), got {len(chunks)}")
        if self._settled:
            raise InvalidInput("this Moments was settled (read-only, centred in place); add rows to a "
                               "copy() or to a new accumulator and merge with +")
        mats = [to_numpy(c, f"rep {p}") for p, c in enumerate(chunks)]
        rows = mats[0].shape[0]
        for p, mat in enumerate(mats):
            if mat.shape[1] != self.dims[p]:
                raise InvalidInput(f"rep {p} chunk has {mat.shape[1]} columns, expected {self.dims[p]}")
            if mat.shape[0] != rows:
                raise InvalidInput(
                    f"chunks must share rows: rep 0 has {rows}, rep {p} has {mat.shape[0]}"
                )
        if rows == 0:
            return self
        self._centred = None
        total = int(self.offsets[-1])
        work = np.float32 if self._float32_products() else np.float64
        step = max(1, self.budget_bytes // (2 * np.dtype(work).itemsize * total))
        fused = syrk_available() and len(self._panels(work)) == 1
        buf = np.empty((min(ROW_BLOCK if fused else step, rows), total), dtype=work)
        for start in range(0, rows, step):
            self._update_rows([m[start:start + step] for m in mats], buf, row0=self.n, fused=fused)
        return self

    def _float32_products(self) -> bool:
        """Whether products run in float32: ``precision="mixed"`` and ``D`` large enough that
        it pays (below ``MIXED_MIN_WIDTH`` total columns float64 is cheap and exact)."""
        return self.precision == "mixed" and int(self.offsets[-1]) > MIXED_MIN_WIDTH

    def _panels(self, work: type) -> list[tuple[int, int]]:
        """Consecutive rep ranges ``[a, b)`` whose product panel ``(d_a..b) × D`` in the work
        dtype fits in half of ``budget_bytes`` (at least one rep each)."""
        total = int(self.offsets[-1])
        cap = max(1, (self.budget_bytes // 2) // (np.dtype(work).itemsize * total))
        out, a = [], 0
        while a < self.n_reps:
            b = a + 1
            while b < self.n_reps and self.offsets[b + 1] - self.offsets[a] <= cap:
                b += 1
            out.append((a, b))
            a = b
        return out

    def _update_rows(self, mats: list[np.ndarray], buf: np.ndarray, row0: int, fused: bool) -> None:
        """Accumulate one sub-chunk of rows. ``buf`` is scratch in the product dtype (float64,
        or float32 for mixed precision): ``ROW_BLOCK × D`` when ``fused`` (every block fits
        one product panel), else ``rows × D``.

        Rows are centred ``ROW_BLOCK`` at a time, and each block's column sums, heavy-column
        products and row norms are taken while it is in cache. ``fused``: the block's
        ``UᵀU`` is added to a ``D × D`` product right away (SYRK with β = 1), so the centred
        copy never goes back to memory; otherwise the whole sub-chunk is centred first and
        multiplied panel by panel. Nothing is added to ``self`` before the sub-chunk is
        known to be finite."""
        rows = mats[0].shape[0]
        work = buf.dtype
        mixed = work == np.float32
        if self.n == 0:
            # only nearness matters (any shift is exact algebra): the mean in the input's own width
            center = np.concatenate([
                np.asarray(m[:ROW_BLOCK].mean(axis=0, dtype=np.result_type(m.dtype, np.float32)), dtype=np.float64)
                for m in mats
            ])
            if not np.isfinite(center).all():
                self._raise_non_finite(mats, row0)
            if mixed:  # a float32-exact shift: x − c is then correctly rounded in float32
                center = center.astype(np.float32).astype(np.float64)
            self.center = center
        c_work = self.center.astype(work)
        if mixed and not np.array_equal(c_work, self.center):
            # e.g. after a merge: move to a float32-exact shift first (exact algebra)
            self._assign(self.recentered(c_work.astype(np.float64)))
        total, reps = int(self.offsets[-1]), self.n_reps
        colsum = np.zeros(total)
        heavy, hh, heavy_sum = None, None, None
        w, v, q = np.zeros(reps), np.zeros((reps, total)), np.zeros((reps, reps))
        acc = np.zeros((total, total), dtype=work) if fused else None
        block = buf.shape[0] if fused else rows
        for r in range(0, rows, block):
            u = buf[: min(block, rows - r)]  # unfused: one block, the whole sub-chunk
            for p, m in enumerate(mats):
                sl = self._slice(p)
                # float16/float32 (and small ints) subtract a float32 shift exactly-then-rounded;
                # wider inputs are centred in float64 first, then rounded to the work dtype.
                narrow = np.result_type(m.dtype, np.float32) == np.float32
                with np.errstate(over="ignore", invalid="ignore"):  # checked below
                    np.subtract(m[r:r + u.shape[0]], c_work[sl] if narrow else self.center[sl],
                                out=u[:, sl], casting="same_kind")
            with np.errstate(over="ignore", invalid="ignore"):
                colsum += _column_sums(u)
                if mixed:
                    heavy = self._heavy_columns(u)
                    uh = np.take(u, heavy[0], axis=1).astype(np.float64)
                    # the heavy × heavy entries exactly (float32 products fit float64)
                    if hh is None:
                        hh, heavy_sum = np.zeros((len(heavy[0]),) * 2), np.zeros(len(heavy[0]))
                    hh += uh.T @ uh
                    heavy_sum += uh.sum(axis=0)
                if self.row_norms:
                    rho = np.stack([np.einsum("ij,ij->i", u[:, self._slice(p)], u[:, self._slice(p)])
                                    for p in range(reps)], axis=1)
                    rho64 = rho.astype(np.float64)
                    w += rho64.sum(axis=0)
                    v += rho.T @ u
                    q += rho64.T @ rho64
            if acc is not None:
                syrk_accumulate(u, acc)  # upper triangle += uᵀu while u is in cache
        if heavy is not None:
            colsum[heavy[0]] = heavy_sum  # the dominant columns' sums exactly
        if not np.isfinite(colsum).all():
            self._raise_non_finite(mats, row0)
        self.n += rows
        self.sum_u += colsum
        if self.row_norms:
            self.w += w
            self.v += v
            self.q += q
        if acc is not None:
            for p in range(reps):  # SYRK filled the upper triangle; the diagonal blocks need both
                sl = self._slice(p)
                _mirror_upper(acc[sl, sl])
            self._add_products([(0, reps, acc)], 0, reps, hh, heavy)
            return
        for a, b in self._panels(work.type):
            self._panel_products(buf[:rows], a, b, hh, heavy)

    def _panel_products(self, u: np.ndarray, a: int, b: int, hh: np.ndarray | None,
                        heavy: tuple[np.ndarray, list[np.ndarray], list[np.ndarray]] | None) -> None:
        """Accumulate the wanted blocks ``(i, j)``, ``a ≤ i < b``, ``j ≥ i``: SYRK for the panel's
        own square (when any of its blocks is wanted), one GEMM per run of consecutive wanted
        reps to its right."""
        off = self.offsets
        lo, mid = int(off[a]), int(off[b])
        g = u[:, lo:mid]
        want = {j for i in range(a, b) for j in range(i, self.n_reps) if (i, j) in self.blocks}
        if not want:
            return
        products: list[tuple[int, int, np.ndarray]] = []  # (first rep, end rep, g.T @ u[:, reps])
        if any(j < b for j in want):
            products.append((a, b, g.T @ g))  # same buffer transposed: numpy calls SYRK
        right = sorted(j for j in want if j >= b)
        for c, e in _runs(right):
            products.append((c, e, g.T @ u[:, int(off[c]):int(off[e])]))
        self._add_products(products, a, b, hh, heavy)

    def _add_products(self, products: list[tuple[int, int, np.ndarray]], a: int, b: int,
                      hh: np.ndarray | None,
                      heavy: tuple[np.ndarray, list[np.ndarray], list[np.ndarray]] | None) -> None:
        """Add product panels (first rep ``c``, end rep ``e``, ``U_{a..b}ᵀ U_{c..e}``) into the
        float64 blocks they hold, with the heavy × heavy entries replaced by their float64
        values ``hh``."""
        off = self.offsets
        for c, e, prod in products:
            for i in range(a, b):
                r0 = int(off[i] - off[a])
                for j in range(max(i, c), e):
                    dst = self.blocks.get((i, j))
                    if dst is None:
                        continue
                    c0 = int(off[j] - off[c])
                    part = prod[r0:r0 + self.dims[i], c0:c0 + self.dims[j]]
                    dst += part
                    if hh is not None and heavy is not None:
                        hi, hj = heavy[1][i], heavy[1][j]
                        pi, pj = heavy[2][i], heavy[2][j]
                        dst[np.ix_(hi, hj)] += hh[np.ix_(pi, pj)] - part[np.ix_(hi, hj)]

    def _assign(self, other: Moments) -> None:
        self.center, self.sum_u, self.blocks = other.center, other.sum_u, other.blocks
        self.w, self.v, self.q = other.w, other.v, other.q
        self._centred = None

    def _heavy_columns(self, u: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """The ``HEAVY_PER_REP`` largest-variance columns of each rep (chosen once, from the
        first ``ROW_BLOCK`` float32 rows), as (global column indices, per-rep local indices, per-rep
        positions in the global list). Their mutual products are computed in float64."""
        if self._heavy is None:
            head = u[:ROW_BLOCK]  # u is already (nearly) centred: Σu² ranks the columns by variance
            var = np.einsum("ij,ij->j", head, head)
            local, glob, pos, k = [], [], [], 0
            for p in range(self.n_reps):
                sl = self._slice(p)
                h = min(HEAVY_PER_REP, self.dims[p])
                idx = np.sort(np.argsort(var[sl], kind="stable")[::-1][:h])
                local.append(idx)
                glob.append(idx + sl.start)
                pos.append(np.arange(k, k + h))
                k += h
            self._heavy = (np.concatenate(glob), local, pos)
        return self._heavy

    def _raise_non_finite(self, mats: list[np.ndarray], row0: int) -> None:
        """Name the first non-finite value's rep and row (counted over every row this
        accumulator has seen), or say the float32 products overflowed."""
        for p, m in enumerate(mats):
            check_all_finite(m, f"rep {p}", first_row=row0)
        raise InvalidInput(
            "values overflow float32 products; use precision='float64' for data this large"
        )

    # ------------------------------------------------------------------ exact algebra
    def copy(self) -> Moments:
        out = Moments(
            self.dims, n=self.n, center=self.center.copy(), sum_u=self.sum_u.copy(),
            blocks={k: b.copy() for k, b in self.blocks.items()}, w=self.w.copy(),
            v=self.v.copy(), q=self.q.copy(), precision=self.precision,
            budget_bytes=self.budget_bytes,
        )
        out._heavy = self._heavy
        return out

    def recentered(self, new_center: np.ndarray, *, in_place: bool = False) -> Moments:
        """The same statistics expressed around ``new_center`` ``(D,)`` (exact algebra).

        With ``δ = c − c'`` and ``u' = u + δ``: ``Σu' = Σu + nδ``;
        ``S'_ij = S_ij + δ_i s_jᵀ + s_i δ_jᵀ + n δ_i δ_jᵀ``; ``ρ'_p = ρ_p + 2u_pᵀδ_p + |δ_p|²`` gives
        ``w'``, ``V'`` and ``Q'`` in terms of ``S``, ``s = Σu``, ``V``, ``w`` (derivation in
        docs/measures.md). ``in_place=True`` changes this accumulator's blocks instead of
        making new ones (no second copy of the largest arrays) and returns ``self``.
        """
        new_center = np.asarray(new_center, dtype=np.float64)
        delta = self.center - new_center
        n, s = self.n, self.sum_u
        P = self.n_reps
        sl = [self._slice(p) for p in range(P)]
        # Σ_i u(i) a_p(i) = S[:, p] δ_p  (D-vector, full symmetric column panel), from the
        # blocks as they are; NaN where a block is missing: only pairs never wanted read those
        s_delta = np.full((P, int(self.offsets[-1])), np.nan)
        for (i, j), b in self.blocks.items():
            s_delta[j, sl[i]] = b @ delta[sl[j]]
            if i != j:
                s_delta[i, sl[j]] = delta[sl[i]] @ b
        blocks = self.blocks if in_place else {}
        for (i, j), b in self.blocks.items():
            di, dj, si, sj = delta[sl[i]], delta[sl[j]], s[sl[i]], s[sl[j]]
            # S + δ_i s_jᵀ + s_i δ_jᵀ + n δ_i δ_jᵀ as one rank-2 product (two passes over S)
            correction = np.stack([di, si], axis=1) @ np.stack([sj + n * dj, dj])
            if in_place:
                b += correction
            else:
                correction += b
                blocks[(i, j)] = correction
        # a_p(i) = u_p(i)·δ_p ; e_p = |δ_p|²
        e = np.array([delta[sl[p]] @ delta[sl[p]] for p in range(P)])
        sum_a = np.array([s[sl[p]] @ delta[sl[p]] for p in range(P)])
        w = self.w + 2 * sum_a + n * e
        v = (
            self.v + np.outer(self.w, delta) + 2 * s_delta + 2 * np.outer(sum_a, delta)
            + np.outer(e, s) + n * np.outer(e, delta)
        )
        # Σ ρ_p a_q = V_p[q-slice]·δ_q ; Σ a_p a_q = δ_pᵀ S_pq δ_q
        rho_a = np.array([[self.v[p, sl[q]] @ delta[sl[q]] for q in range(P)] for p in range(P)])
        aa = np.array([[s_delta[q, sl[p]] @ delta[sl[p]] for q in range(P)] for p in range(P)])
        q = (
            self.q + 2 * rho_a + 2 * rho_a.T + 4 * aa
            + np.outer(self.w, e) + np.outer(e, self.w)
            + 2 * np.outer(sum_a, e) + 2 * np.outer(e, sum_a) + n * np.outer(e, e)
        )
        if in_place:
            self.center, self.sum_u, self.w, self.v, self.q = new_center.copy(), s + n * delta, w, v, q
            self._centred = None
            return self
        out = Moments(self.dims, n=n, center=new_center.copy(), sum_u=s + n * delta, blocks=blocks, w=w, v=v,
                      q=q, precision=self.precision, budget_bytes=self.budget_bytes)
        out._heavy = self._heavy
        return out

    def settle(self) -> Moments:
        """Re-express the statistics around the exact mean in place, for an accumulator that
        is only read from now on (a finished pass): :meth:`pair` then needs no second copy
        of the blocks. Diagonal blocks are symmetrised and every block becomes read-only;
        a later :meth:`update` is refused. Returns ``self``."""
        if self._settled:
            return self
        self.recentered(self.mean(), in_place=True)
        _freeze(self)
        self._settled = True  # a flag, not self._centred = self: no reference cycle to keep it alive
        return self

    def mean(self) -> np.ndarray:
        """Column means ``(D,)`` of all reps concatenated (NaN-free; zeros when n = 0)."""
        if self.n == 0:
            return np.zeros_like(self.center)
        return self.center + self.sum_u / self.n

    def _combine(self, other: Moments, sign: int) -> Moments:
        if not isinstance(other, Moments):
            return NotImplemented
        if other.dims != self.dims:
            raise InvalidInput(f"cannot combine Moments of dims {self.dims} and {other.dims}")
        if set(other.blocks) != set(self.blocks):
            raise InvalidInput("cannot combine Moments that accumulated different blocks (pairs=...)")
        ref = self if self.n else other
        out = self.copy()
        out.n = 0
        out.center = ref.center.copy()
        out.sum_u[:] = 0
        for blk in out.blocks.values():
            blk[:] = 0
        out.w[:] = 0
        out.v[:] = 0
        out.q[:] = 0
        for part, sgn in ((self, 1), (other, sign)):
            if part.n == 0:
                continue
            aligned = part.recentered(ref.center)
            out.n += sgn * aligned.n
            out.sum_u += sgn * aligned.sum_u
            for k in out.blocks:
                out.blocks[k] += sgn * aligned.blocks[k]
            out.w += sgn * aligned.w
            out.v += sgn * aligned.v
            out.q += sgn * aligned.q
        if out.n < 0:
            raise InvalidInput(f"cannot subtract {other.n} rows from an accumulator of {self.n}")
        return out

    def __add__(self, other: Moments) -> Moments:
        return self._combine(other, +1)

    def __radd__(self, other: Any) -> Moments:  # lets sum() start from 0
        if isinstance(other, int) and other == 0:
            return self.copy()
        return NotImplemented

    def __sub__(self, other: Moments) -> Moments:
        return self._combine(other, -1)

    # ------------------------------------------------------------------ reading
    def pair(self, i: int, j: int) -> PairMoments:
        """Centred moments of reps ``(i, j)`` around their exact means (``i == j`` allowed).

        The statistics are re-expressed around the exact mean once per accumulator state
        (memoised until the next update), so reading all P² pairs costs one recentring."""
        for k in (i, j):
            if not 0 <= k < self.n_reps:
                raise InvalidInput(f"rep index {k} out of range for {self.n_reps} reps")
        if not self.has_pair(i, j):
            raise InvalidInput(
                f"pair ({i}, {j}) was not accumulated: this Moments was built with pairs=... "
                "that exclude it, or a skipped diagonal block was never supplied with set_rep()"
            )
        c = self._centred_state()  # read-only arrays, shared between pairs: no copies
        sxx, syy = c.block(i, i), c.block(j, j)
        return PairMoments(
            n=c.n, mean_x=c.center[c._slice(i)], mean_y=c.center[c._slice(j)], sxx=sxx, syy=syy,
            sxy=c.block(i, j),
            sum_kk=float(c.q[i, i]), sum_ll=float(c.q[j, j]), sum_kl=float(c.q[i, j]),
        )

    def _centred_state(self) -> Moments:
        """``recentered(mean())`` with symmetrised, read-only diagonal blocks (memoised;
        ``self`` after :meth:`settle`)."""
        if self._settled:
            return self
        if self._centred is None or self._centred.n != self.n:
            self._centred = _freeze(self.recentered(self.mean()))
        return self._centred

    def subset(self, reps: Sequence[int]) -> Moments:
        """The accumulator restricted to the listed reps (in that order)."""
        reps = list(reps)
        dims = [self.dims[p] for p in reps]
        cols = np.concatenate([np.arange(self.offsets[p], self.offsets[p + 1]) for p in reps])
        blocks = {}
        for a in range(len(reps)):
            for b in range(a, len(reps)):
                if _key(reps[a], reps[b]) in self.blocks:
                    blocks[(a, b)] = self.block(reps[a], reps[b]).copy()
        return Moments(
            dims, n=self.n, center=self.center[cols].copy(), sum_u=self.sum_u[cols].copy(),
            blocks=blocks, w=self.w[reps].copy(), v=self.v[np.ix_(reps, cols)].copy(),
            q=self.q[np.ix_(reps, reps)].copy(), precision=self.precision,
            budget_bytes=self.budget_bytes,
        )

    def rep(self, p: int) -> Moments:
        """Rep ``p``'s own statistics as a one-rep accumulator (what a per-rep cache keeps;
        serialise with :meth:`to_bytes`). Needs its diagonal block."""
        if _key(p, p) not in self.blocks:
            raise InvalidInput(f"rep {p}'s own block was not accumulated (skip_diag); nothing to extract")
        return self.subset([p])

    def set_rep(self, p: int, single: Moments) -> Moments:
        """Supply rep ``p``'s diagonal block from ``single`` (a one-rep accumulator over the
        same rows, e.g. from a cache: :meth:`rep` of an earlier pass), re-expressed exactly
        around this accumulator's shift. Everything else about rep ``p`` (sums, row norms,
        cross terms) this pass accumulates itself. Returns ``self``."""
        if not 0 <= p < self.n_reps:
            raise InvalidInput(f"rep index {p} out of range for {self.n_reps} reps")
        if single.n_reps != 1 or single.dims[0] != self.dims[p]:
            raise InvalidInput(
                f"set_rep needs a one-rep Moments of width {self.dims[p]}, got dims {single.dims}"
            )
        if single.n != self.n:
            raise InvalidInput(
                f"set_rep: the cached statistics cover {single.n} rows but this pass has {self.n}; "
                "they are not the same rows - recompute them (drop the cached entry)"
            )
        sl = self._slice(p)
        moved = single.recentered(self.center[sl])
        if not np.allclose(moved.sum_u, self.sum_u[sl], rtol=1e-6, atol=1e-6 * max(1.0, self.n)):
            raise InvalidInput(
                f"set_rep: the cached statistics of rep {p} have different column sums than this "
                "pass; they are not the same rows - recompute them (drop the cached entry)"
            )
        # its own statistics (a merge may have left NaN where the block was missing)
        self.blocks[(p, p)] = moved.blocks[(0, 0)].copy()
        self.w[p], self.q[p, p] = moved.w[0], moved.q[0, 0]
        self.v[p, sl] = moved.v[0]
        self._centred = None
        return self

    def assume_settled(self) -> Moments:
        """Mark statistics that are already centred around their exact mean as settled
        (read-only, :meth:`pair` reads them as they are): what :meth:`rep` of a settled
        accumulator holds, e.g. a per-rep cache entry. Returns ``self``."""
        _freeze(self)
        self._settled = True
        return self

    def install_rep(self, p: int, single: Moments) -> Moments:
        """Supply rep ``p``'s own statistics (diagonal block, row-norm sums) to a settled
        accumulator that skipped them (``skip_diag``), from ``single``: :meth:`rep` of an
        earlier settled accumulator over the same rows, e.g. from the per-rep cache.

        Unlike :meth:`set_rep` before :meth:`settle` (which moves the cached block to this
        pass's shift and back, rounding on the way), the values are taken as they are when
        both are centred on the same, bitwise-equal mean — as they are when computed from
        the same rows — so a value read from this accumulator is bitwise the value an
        accumulator that computed the block itself gives: results do not depend on what the
        cache held. Otherwise the block is re-expressed around this mean (exact algebra,
        rounding ~1e-15 relative). Returns ``self``."""
        if not self._settled:
            raise InvalidInput("install_rep needs a settled accumulator (settle() first); use set_rep before")
        if not 0 <= p < self.n_reps:
            raise InvalidInput(f"rep index {p} out of range for {self.n_reps} reps")
        if single.n_reps != 1 or single.dims[0] != self.dims[p] or single.n != self.n:
            raise InvalidInput(
                f"install_rep needs a one-rep Moments of width {self.dims[p]} over {self.n} rows, got dims "
                f"{single.dims} over {single.n}; they are not the same rows - recompute them (drop the cached entry)")
        sl = self._slice(p)
        mean = self.center[sl]
        if not np.allclose(single.center, mean, rtol=1e-9, atol=1e-9):
            raise InvalidInput(
                f"install_rep: the cached statistics of rep {p} have another mean than this pass; they are "
                "not the same rows - recompute them (drop the cached entry)")
        if np.array_equal(single.center, mean):
            source = single
        else:  # e.g. an entry from another accumulation order: move it (exact algebra)
            source = single.recentered(mean)
            _symmetrise(source.blocks[(0, 0)])
        block = np.array(source.blocks[(0, 0)], dtype=np.float64)  # our own, writable copy
        block.flags.writeable = False
        self.blocks[(p, p)] = block
        self.w = self.w.copy()
        self.v = self.v.copy()
        self.q = self.q.copy()
        self.w[p], self.q[p, p] = source.w[0], source.q[0, 0]
        self.v[p, sl] = source.v[0]
        return self

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """A dict of numpy arrays (``np.savez``-ready) that :meth:`from_arrays` inverts."""
        out: dict[str, np.ndarray] = {
            "format_version": np.array(_FORMAT_VERSION),
            "dims": np.array(self.dims, dtype=np.int64),
            "n": np.array(self.n, dtype=np.int64),
            "center": self.center, "sum_u": self.sum_u,
            "w": self.w, "v": self.v, "q": self.q,
            "precision": np.array(self.precision),
        }
        for (i, j), b in self.blocks.items():
            out[f"block_{i}_{j}"] = b
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> Moments:
        """Rebuild from :meth:`to_arrays` output (or an opened ``.npz``)."""
        try:
            version = int(arrays["format_version"])
            if version != _FORMAT_VERSION:
                raise InvalidInput(
                    f"Moments format version {version} is not supported (this actdb reads "
                    f"{_FORMAT_VERSION}); recompute the statistics"
                )
            dims = [int(d) for d in arrays["dims"]]
            p = len(dims)
            names = set(arrays.files if hasattr(arrays, "files") else arrays.keys())
            blocks = {
                (i, j): np.array(arrays[f"block_{i}_{j}"], dtype=np.float64)
                for i in range(p) for j in range(i, p) if f"block_{i}_{j}" in names
            }
            return cls(
                dims, n=int(arrays["n"]), center=np.array(arrays["center"], dtype=np.float64),
                sum_u=np.array(arrays["sum_u"], dtype=np.float64), blocks=blocks,
                w=np.array(arrays["w"], dtype=np.float64), v=np.array(arrays["v"], dtype=np.float64),
                q=np.array(arrays["q"], dtype=np.float64), precision=str(arrays["precision"]),  # type: ignore[arg-type]
            )
        except KeyError as exc:
            raise InvalidInput(f"not a serialised Moments: missing {exc}") from None

    def to_bytes(self) -> bytes:
        """Compressed ``.npz`` bytes of :meth:`to_arrays`."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.to_arrays())  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Moments:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls.from_arrays(z)

    def __repr__(self) -> str:
        return f"Moments(dims={self.dims}, n={self.n}, precision={self.precision!r})"

    def nbytes(self) -> int:
        """Bytes held by the float64 accumulators."""
        return int(
            sum(b.nbytes for b in self.blocks.values())
            + self.center.nbytes + self.sum_u.nbytes + self.v.nbytes + self.q.nbytes + self.w.nbytes
        )


def _mirror_upper(a: np.ndarray, tile: int = 256) -> None:
    """Copy the upper triangle of the square ``a`` onto its lower one, in place, tile pair by
    tile pair so every transposed read stays in cache."""
    d = a.shape[0]
    for r in range(0, d, tile):
        diag = a[r:r + tile, r:r + tile]
        np.copyto(diag, diag.T.copy(), where=np.tri(diag.shape[0], k=-1, dtype=bool))
        for c in range(r + tile, d, tile):
            a[c:c + tile, r:r + tile] = a[r:r + tile, c:c + tile].T


def _column_sums(u: np.ndarray) -> np.ndarray:
    """Column sums of a C-contiguous chunk in float64. A float32 chunk is summed 16 rows at
    a time in float32 first (half the time of a float64 reduction; each partial sum is off by
    at most ~16 ulp, far below the float32 products' own rounding), then in float64."""
    rows = u.shape[0] // 16 * 16
    if u.dtype != np.float32 or rows == 0 or not u.flags.c_contiguous:
        return u.sum(axis=0, dtype=np.float64)
    head = u[:rows].reshape(-1, 16, u.shape[1]).sum(axis=1).sum(axis=0, dtype=np.float64)
    return head + u[rows:].sum(axis=0, dtype=np.float64)


def _freeze(m: Moments) -> Moments:
    """Symmetrise ``m``'s diagonal blocks and make its blocks and centre read-only."""
    for (i, j), b in m.blocks.items():
        if i == j:
            _symmetrise(b)
        b.flags.writeable = False
    m.center.flags.writeable = False
    return m


def _symmetrise(b: np.ndarray, tile: int = 256) -> None:
    """``b ← (b + bᵀ)/2`` in place: the upper triangle averaged tile pair by tile pair (a
    whole-matrix transposed copy is cache-hostile: ~5× slower at d = 2,048), then mirrored."""
    d = b.shape[0]
    for r in range(0, d, tile):
        for c in range(r, d, tile):
            upper = b[r:r + tile, c:c + tile]
            upper += b[c:c + tile, r:r + tile].T.copy()  # a copy: on the diagonal the two overlap
            upper *= 0.5
    _mirror_upper(b, tile)


def _key(i: int, j: int) -> tuple[int, int]:
    return (i, j) if i <= j else (j, i)


def _block_keys(p: int, pairs: Iterable[tuple[int, int]] | None, skip_diag: Iterable[int]) -> list[tuple[int, int]]:
    """The upper-triangle block keys ``pairs`` needs (all of them when ``None``)."""
    if pairs is None:
        keys = {(i, j) for i in range(p) for j in range(i, p)}
    else:
        keys = set()
        for pair in pairs:
            i, j = (int(x) for x in pair)
            if not (0 <= i < p and 0 <= j < p):
                raise InvalidInput(f"pairs: ({i}, {j}) is out of range for {p} reps")
            keys |= {_key(i, j), (i, i), (j, j)}
    for k in skip_diag:
        if not 0 <= int(k) < p:
            raise InvalidInput(f"skip_diag: rep {k} is out of range for {p} reps")
        keys.discard((int(k), int(k)))
    return sorted(keys)


def _runs(idx: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted indices as ``[start, end)`` runs of consecutive values."""
    out: list[tuple[int, int]] = []
    for k in idx:
        if out and out[-1][1] == k:
            out[-1] = (out[-1][0], k + 1)
        else:
            out.append((k, k + 1))
    return out


def _parse_precision(value: str) -> Precision:
    if value not in ("float64", "mixed"):
        raise InvalidInput(f"precision must be 'float64' or 'mixed', got {value!r}")
    return value  # type: ignore[return-value]


def shard_moments(
    mats: Sequence[Any], n_shards: int, *, precision: Precision = "float64", row_norms: bool = True
) -> list[Moments]:
    """Per-shard :class:`Moments` over ``n_shards`` contiguous row ranges of ``mats``."""
    arrays = [as_matrix(m, f"rep {p}") for p, m in enumerate(mats)]
    n = arrays[0].shape[0]
    if n_shards < 2 or n_shards > n:
        raise InvalidInput(f"n_shards must be between 2 and n_rows={n}, got {n_shards}")
    edges = np.linspace(0, n, n_shards + 1).round().astype(int)
    dims = [a.shape[1] for a in arrays]
    return [
        Moments.empty(dims, precision=precision, row_norms=row_norms).update([a[lo:hi] for a in arrays])
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
    ]


def gemm_flops(n: int, dims: Sequence[int]) -> float:
    """Flops of one pass: ``n·D²`` for ``D = Σ d_p`` (symmetric blocks counted once)."""
    total = sum(dims)
    return float(n) * total * total
