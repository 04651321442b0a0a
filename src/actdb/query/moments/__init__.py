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
(numpy's own OpenBLAS, see :mod:`actdb.query.moments.blas`) while the block is still in cache: the
centred copy never makes a round trip through memory, which is what a single-threaded
centring pass costs otherwise (measured in docs/measures.md). Wider sets (a 13-layer
matrix) are centred a sub-chunk at a time and multiplied one row panel per representation
(``U_pᵀ [U_p … U_P]``: SYRK for the panel's square, one GEMM to its right), the panels bounded
by ``budget_bytes``.

``precision="float64"`` (default) runs the products in float64 and matches the float64
textbook formula to ~1e-14. ``precision="mixed"`` runs them in float32 (at the faster
float32 GEMM rate): each chunk is centred by a float32-exact shift (float16/float32 input: ``x − c``
is then the correctly rounded exact difference; float64 input is centred in float64 first),
the products of each panel are accumulated into float64 per row sub-chunk, and the products
among each rep's ``HEAVY_PER_REP`` largest-variance columns (chosen on the first chunk) are
recomputed in float64 and replace the float32 ones: outlier dimensions dominate the Frobenius
norms that CKA divides, and their float32 error would otherwise not average out. Below
``MIXED_MIN_WIDTH`` total columns mixed uses float64 (cheap and exact). CKA stays within
1e-8 of float64 at every shape of ``tests/query/test_moments.py`` and ``bench/measures.py``
(the errors measured, by data kind: docs/measures.md).
float64 input is rounded to float32 once centred (~6e-8 relative per value), so on
ill-conditioned float64 data mixed can be off by a few 1e-8; mixed is meant for the float16 /
float32 activations a store holds.

``pairs=`` restricts the work to the blocks some pairs need (a plan that compares each
checkpoint with the final one, or only the pairs not yet cached, does a fraction of the
``n·D²`` flops); ``skip_diag=`` leaves out reps' own blocks that a per-rep cache supplies
afterwards through :meth:`Moments.set_rep` (what :meth:`Moments.rep` extracted earlier).
The statistics around the exact mean are computed once per accumulator state and shared
by every :meth:`Moments.pair` read (read-only arrays).

Modules: :mod:`~actdb.query.moments.state` (:class:`Moments`, :class:`PairMoments`: the sums
and their merges, recentring and reading), :mod:`~actdb.query.moments.algebra` (the exact
recentring formulas), :mod:`~actdb.query.moments.kernel` (adding rows: centring, panels,
products, heavy columns, tiling) with :mod:`~actdb.query.moments.blas` (the SYRK binding),
:mod:`~actdb.query.moments.serialise` (the one serialised form) and
:mod:`~actdb.query.moments.inputs` (input arrays).
"""

from actdb.query.moments.inputs import as_matrix, to_numpy
from actdb.query.moments.kernel import HEAVY_PER_REP, MIXED_MIN_WIDTH, ROW_BLOCK, HeavyColumns
from actdb.query.moments.state import DEFAULT_BUDGET_BYTES, Moments, PairMoments, Precision, shard_moments

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "HEAVY_PER_REP",
    "MIXED_MIN_WIDTH",
    "ROW_BLOCK",
    "HeavyColumns",
    "Moments",
    "PairMoments",
    "Precision",
    "as_matrix",
    "shard_moments",
    "to_numpy",
]
