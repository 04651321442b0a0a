"""The exact algebra of moments sums: another shift, one rep's statistics supplied, block keys."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from actdb.errors import InvalidInput
from actdb.query.moments.kernel import Sums, symmetrise


class Recentred(NamedTuple):
    """The sums around a new shift (``n`` and the shift itself are the caller's)."""

    sum_u: np.ndarray
    blocks: dict[tuple[int, int], np.ndarray]
    w: np.ndarray
    v: np.ndarray
    q: np.ndarray


def recentre(m: Sums, new_center: np.ndarray, *, in_place: bool = False) -> Recentred:
    """``m``'s sums expressed around ``new_center`` ``(D,)`` float64 instead of ``m.center``.

    With ``δ = c − c'`` and ``u' = u + δ``: ``Σu' = Σu + nδ``;
    ``S'_ij = S_ij + δ_i s_jᵀ + s_i δ_jᵀ + n δ_i δ_jᵀ``; ``ρ'_p = ρ_p + 2u_pᵀδ_p + |δ_p|²`` gives
    ``w'``, ``V'`` and ``Q'`` in terms of ``S``, ``s = Σu``, ``V``, ``w`` (derivation in
    docs/measures.md). ``in_place=True`` adds the corrections to ``m.blocks`` themselves (no
    second copy of the largest arrays) and returns them; ``m`` is otherwise left as it is.
    """
    delta = m.center - new_center
    n, s = m.n, m.sum_u
    P = len(m.dims)
    sl = [slice(int(m.offsets[p]), int(m.offsets[p + 1])) for p in range(P)]
    # Σ_i u(i) a_p(i) = S[:, p] δ_p  (D-vector, full symmetric column panel), from the
    # blocks as they are; NaN where a block is missing: only pairs never wanted read those
    s_delta = np.full((P, int(m.offsets[-1])), np.nan)
    for (i, j), b in m.blocks.items():
        s_delta[j, sl[i]] = b @ delta[sl[j]]
        if i != j:
            s_delta[i, sl[j]] = delta[sl[i]] @ b
    blocks = m.blocks if in_place else {}
    for (i, j), b in m.blocks.items():
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
    w = m.w + 2 * sum_a + n * e
    v = (
        m.v + np.outer(m.w, delta) + 2 * s_delta + 2 * np.outer(sum_a, delta)
        + np.outer(e, s) + n * np.outer(e, delta)
    )
    # Σ ρ_p a_q = V_p[q-slice]·δ_q ; Σ a_p a_q = δ_pᵀ S_pq δ_q
    rho_a = np.array([[m.v[p, sl[q]] @ delta[sl[q]] for q in range(P)] for p in range(P)])
    aa = np.array([[s_delta[q, sl[p]] @ delta[sl[p]] for q in range(P)] for p in range(P)])
    q = (
        m.q + 2 * rho_a + 2 * rho_a.T + 4 * aa
        + np.outer(m.w, e) + np.outer(e, m.w)
        + 2 * np.outer(sum_a, e) + 2 * np.outer(e, sum_a) + n * np.outer(e, e)
    )
    return Recentred(s + n * delta, blocks, w, v, q)


def key(i: int, j: int) -> tuple[int, int]:
    """The upper-triangle key of block ``(i, j)``."""
    return (i, j) if i <= j else (j, i)


def block_keys(p: int, pairs: Iterable[tuple[int, int]] | None, skip_diag: Iterable[int]) -> list[tuple[int, int]]:
    """The upper-triangle block keys ``pairs`` needs (all of them when ``None``), without the
    diagonal blocks of ``skip_diag``."""
    if pairs is None:
        keys = {(i, j) for i in range(p) for j in range(i, p)}
    else:
        keys = set()
        for pair in pairs:
            i, j = (int(x) for x in pair)
            if not (0 <= i < p and 0 <= j < p):
                raise InvalidInput(f"pairs: ({i}, {j}) is out of range for {p} reps")
            keys |= {key(i, j), (i, i), (j, j)}
    for k in skip_diag:
        if not 0 <= int(k) < p:
            raise InvalidInput(f"skip_diag: rep {k} is out of range for {p} reps")
        keys.discard((int(k), int(k)))
    return sorted(keys)


def set_rep_stats(m: Sums, p: int, single: Sums) -> None:
    """``Moments.set_rep``: rep ``p``'s diagonal block (and row-norm sums) from the one-rep
    ``single`` over the same rows, moved to ``m``'s shift; checks that they are the same rows."""
    if not 0 <= p < len(m.dims):
        raise InvalidInput(f"rep index {p} out of range for {len(m.dims)} reps")
    if len(single.dims) != 1 or single.dims[0] != m.dims[p]:
        raise InvalidInput(
            f"set_rep needs a one-rep Moments of width {m.dims[p]}, got dims {single.dims}"
        )
    if single.n != m.n:
        raise InvalidInput(
            f"set_rep: the cached statistics cover {single.n} rows but this pass has {m.n}; "
            "they are not the same rows - recompute them (drop the cached entry)"
        )
    sl = slice(int(m.offsets[p]), int(m.offsets[p + 1]))
    moved = recentre(single, np.asarray(m.center[sl], dtype=np.float64))
    if not np.allclose(moved.sum_u, m.sum_u[sl], rtol=1e-6, atol=1e-6 * max(1.0, m.n)):
        raise InvalidInput(
            f"set_rep: the cached statistics of rep {p} have different column sums than this "
            "pass; they are not the same rows - recompute them (drop the cached entry)"
        )
    # its own statistics (a merge may have left NaN where the block was missing)
    m.blocks[(p, p)] = moved.blocks[(0, 0)].copy()
    m.w[p], m.q[p, p] = moved.w[0], moved.q[0, 0]
    m.v[p, sl] = moved.v[0]


def install_rep_stats(m: Sums, p: int, single: Sums) -> None:
    """``Moments.install_rep`` on settled sums ``m``: rep ``p``'s diagonal block and row-norm
    sums from ``single``, taken as they are when both are centred on the bitwise-same mean,
    else moved to ``m``'s (exact algebra); the block read-only, ``w``/``v``/``q`` new arrays."""
    if not 0 <= p < len(m.dims):
        raise InvalidInput(f"rep index {p} out of range for {len(m.dims)} reps")
    if len(single.dims) != 1 or single.dims[0] != m.dims[p] or single.n != m.n:
        raise InvalidInput(
            f"install_rep needs a one-rep Moments of width {m.dims[p]} over {m.n} rows, got dims "
            f"{single.dims} over {single.n}; they are not the same rows - recompute them (drop the cached entry)")
    sl = slice(int(m.offsets[p]), int(m.offsets[p + 1]))
    mean = m.center[sl]
    if not np.allclose(single.center, mean, rtol=1e-9, atol=1e-9):
        raise InvalidInput(
            f"install_rep: the cached statistics of rep {p} have another mean than this pass; they are "
            "not the same rows - recompute them (drop the cached entry)")
    source: Sums | Recentred = single
    if not np.array_equal(single.center, mean):  # e.g. an entry from another accumulation order
        source = recentre(single, np.asarray(mean, dtype=np.float64))
        symmetrise(source.blocks[(0, 0)])
    block = np.array(source.blocks[(0, 0)], dtype=np.float64)  # our own, writable copy
    block.flags.writeable = False
    m.blocks[(p, p)] = block
    m.w = m.w.copy()
    m.v = m.v.copy()
    m.q = m.q.copy()
    m.w[p], m.q[p, p] = source.w[0], source.q[0, 0]
    m.v[p, sl] = source.v[0]


def add_into(out: Sums, part: Sums, sign: int) -> None:
    """``out += sign · part`` (``sign`` ±1): ``part``'s sums moved to ``out``'s shift first,
    so accumulators built around different shifts merge exactly."""
    if part.n == 0:
        return
    aligned = recentre(part, np.asarray(out.center, dtype=np.float64))
    out.n += sign * part.n
    out.sum_u += sign * aligned.sum_u
    for k in out.blocks:
        out.blocks[k] += sign * aligned.blocks[k]
    out.w += sign * aligned.w
    out.v += sign * aligned.v
    out.q += sign * aligned.q
