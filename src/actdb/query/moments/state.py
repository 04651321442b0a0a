"""The state of a moments accumulator and its exact algebra: :class:`Moments`, :class:`PairMoments`.

Building, merging (``+``, ``-``), recentring, restricting (``subset``, ``rep``), supplying a
rep's cached block (``set_rep``, ``install_rep``) and reading pairs; rows are added by
:mod:`actdb.query.moments.kernel` and serialised by :mod:`actdb.query.moments.serialise`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from actdb.errors import InvalidInput
from actdb.query.moments.algebra import add_into, block_keys, install_rep_stats, key, recentre, set_rep_stats
from actdb.query.moments.inputs import as_matrix, to_numpy
from actdb.query.moments.kernel import HeavyColumns, accumulate, first_shift, product_dtype, sub_chunk_rows, symmetrise
from actdb.query.moments.serialise import Fields, decode, decode_bytes, encode, npz_bytes

Precision = Literal["float64", "mixed"]
DEFAULT_BUDGET_BYTES = 256 * 2**20


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
        self._heavy: HeavyColumns | None = None  # mixed precision's, chosen on the first rows
        self._centred: Moments | None = None  # memo of recentered(mean()), see pair()
        self._settled = False  # centred in place and read-only (see settle())

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, dims: Sequence[int], *, precision: Precision = "float64", budget_bytes: int = DEFAULT_BUDGET_BYTES,
              pairs: Iterable[tuple[int, int]] | None = None, skip_diag: Iterable[int] = (),
              row_norms: bool = True) -> Moments:
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
        blocks = {(i, j): np.zeros((dims[i], dims[j])) for i, j in block_keys(p, pairs, skip_diag)}
        start = 0.0 if row_norms else np.nan
        return cls(
            dims, n=0, center=np.zeros(total), sum_u=np.zeros(total), blocks=blocks,
            w=np.full(p, start), v=np.full((p, total), start), q=np.full((p, p), start),
            precision=precision, budget_bytes=budget_bytes,
        )

    @classmethod
    def from_chunks(cls, chunks: Iterable[Sequence[Any]], dims: Sequence[int], *, precision: Precision = "float64",
                    budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Moments:
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
        return all(key(a, b) in self.blocks for a, b in ((i, i), (j, j), (i, j)))

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
        work = product_dtype(self.precision, total)
        if self.n == 0:  # the shift: the mean of the first sub-chunk's first rows
            step = sub_chunk_rows(self.budget_bytes, work, total)
            center = first_shift([m[:step] for m in mats], self.n)
            if work == np.float32:  # a float32-exact shift: x − c is then correctly rounded in float32
                center = center.astype(np.float32).astype(np.float64)
            self.center = center
        elif work == np.float32 and not np.array_equal(self.center.astype(np.float32), self.center):
            # e.g. after a merge: move to a float32-exact shift first (exact algebra)
            self._assign(self.recentered(self.center.astype(np.float32).astype(np.float64)))
        self._heavy = accumulate(self, mats, work, self.budget_bytes, self._heavy)
        return self

    def _assign(self, other: Moments) -> None:
        self.center, self.sum_u, self.blocks = other.center, other.sum_u, other.blocks
        self.w, self.v, self.q = other.w, other.v, other.q
        self._centred = None

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
        """The same statistics expressed around ``new_center`` ``(D,)`` (exact algebra, see
        :func:`~actdb.query.moments.algebra.recentre`). ``in_place=True`` changes this
        accumulator's blocks instead of making new ones (no second copy of the largest
        arrays) and returns ``self``."""
        new_center = np.asarray(new_center, dtype=np.float64)
        moved = recentre(self, new_center, in_place=in_place)
        if in_place:
            self.center, self.sum_u, self.w, self.v, self.q = (
                new_center.copy(), moved.sum_u, moved.w, moved.v, moved.q)
            self._centred = None
            return self
        out = Moments(self.dims, n=self.n, center=new_center.copy(), sum_u=moved.sum_u, blocks=moved.blocks,
                      w=moved.w, v=moved.v, q=moved.q, precision=self.precision, budget_bytes=self.budget_bytes)
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
        for arr in (out.sum_u, *out.blocks.values(), out.w, out.v, out.q):
            arr[:] = 0
        for part, sgn in ((self, 1), (other, sign)):
            add_into(out, part, sgn)
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
        return PairMoments(
            n=c.n, mean_x=c.center[c._slice(i)], mean_y=c.center[c._slice(j)], sxx=c.block(i, i),
            syy=c.block(j, j), sxy=c.block(i, j),
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

    # ------------------------------------------------------------------ reps
    def subset(self, reps: Sequence[int]) -> Moments:
        """The accumulator restricted to the listed reps (in that order)."""
        reps = [int(p) for p in reps]
        idx = np.array(reps, dtype=np.intp)
        dims = [self.dims[p] for p in reps]
        cols = np.concatenate([np.arange(self.offsets[p], self.offsets[p + 1]) for p in reps])
        blocks = {}
        for a in range(len(reps)):
            for b in range(a, len(reps)):
                if key(reps[a], reps[b]) in self.blocks:
                    blocks[(a, b)] = self.block(reps[a], reps[b]).copy()
        return Moments(
            dims, n=self.n, center=self.center[cols].copy(), sum_u=self.sum_u[cols].copy(),
            blocks=blocks, w=self.w[idx].copy(), v=self.v[np.ix_(idx, cols)].copy(),
            q=self.q[np.ix_(idx, idx)].copy(), precision=self.precision,
            budget_bytes=self.budget_bytes,
        )

    def rep(self, p: int) -> Moments:
        """Rep ``p``'s own statistics as a one-rep accumulator (what a per-rep cache keeps;
        serialise with :meth:`to_bytes`). Needs its diagonal block."""
        if key(p, p) not in self.blocks:
            raise InvalidInput(f"rep {p}'s own block was not accumulated (skip_diag); nothing to extract")
        return self.subset([p])

    def set_rep(self, p: int, single: Moments) -> Moments:
        """Supply rep ``p``'s diagonal block from ``single`` (a one-rep accumulator over the
        same rows, e.g. from a cache: :meth:`rep` of an earlier pass), re-expressed exactly
        around this accumulator's shift. Everything else about rep ``p`` (sums, row norms,
        cross terms) this pass accumulates itself. Returns ``self``."""
        set_rep_stats(self, p, single)
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
        install_rep_stats(self, p, single)
        return self

    # ------------------------------------------------------------------ persistence
    def to_arrays(self, *, symmetric: bool = False) -> dict[str, np.ndarray]:
        """A dict of numpy arrays (``np.savez``-ready) that :meth:`from_arrays` inverts, in the
        format of :mod:`actdb.query.moments.serialise`. ``symmetric=True`` writes the diagonal
        blocks as their upper triangles: only for exactly symmetric ones (settled statistics)."""
        return encode(self._fields(), symmetric=symmetric)

    @classmethod
    def from_arrays(cls, arrays: Any) -> Moments:
        """Rebuild from :meth:`to_arrays` output (or an opened ``.npz``)."""
        return cls._from_fields(decode(arrays))

    def to_bytes(self) -> bytes:
        """Compressed ``.npz`` bytes of :meth:`to_arrays`."""
        return npz_bytes(self.to_arrays())

    @classmethod
    def from_bytes(cls, data: bytes) -> Moments:
        return cls._from_fields(decode_bytes(data))

    def _fields(self) -> Fields:
        return Fields(self.dims, self.n, self.center, self.sum_u, self.blocks, self.w, self.v, self.q,
                                self.precision)

    @classmethod
    def _from_fields(cls, f: Fields) -> Moments:
        return cls(f.dims, n=f.n, center=f.center, sum_u=f.sum_u, blocks=f.blocks, w=f.w, v=f.v, q=f.q,
                   precision=_parse_precision(f.precision))

    def __repr__(self) -> str:
        return f"Moments(dims={self.dims}, n={self.n}, precision={self.precision!r})"

    def nbytes(self) -> int:
        """Bytes held by the float64 accumulators."""
        return int(
            sum(b.nbytes for b in self.blocks.values())
            + self.center.nbytes + self.sum_u.nbytes + self.v.nbytes + self.q.nbytes + self.w.nbytes
        )


def _freeze(m: Moments) -> Moments:
    """Symmetrise ``m``'s diagonal blocks and make its blocks and centre read-only."""
    for (i, j), b in m.blocks.items():
        if i == j:
            symmetrise(b)
        b.flags.writeable = False
    m.center.flags.writeable = False
    return m


def _parse_precision(value: str) -> Precision:
    if value == "float64":
        return "float64"
    if value == "mixed":
        return "mixed"
    raise InvalidInput(f"precision must be 'float64' or 'mixed', got {value!r}")


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
        for lo, hi in itertools.pairwise(edges)
    ]
