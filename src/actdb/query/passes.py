"""One streaming pass over the rows of several reps into moments accumulators.

The unit of work of both executors (local threads and Dask workers): read the sources
block by block, once, and accumulate the blocks a plan needs, optionally split into
contiguous row-space shards for jackknife standard errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from actdb.query.moments import Moments
from actdb.query.rows import Source

GEMM_BUDGET = 256 * 2**20  # the accumulator's working buffers (row panels and products)
PairKey = tuple[int, int]


def shard_edges(n: int, shards: int) -> np.ndarray:
    """Row-space positions splitting ``n`` rows into ``shards`` contiguous shards, as
    :func:`actdb.query.moments.shard_moments` splits them (so standard errors agree)."""
    return np.linspace(0, n, shards + 1).round().astype(np.int64)


def _position(source: Source, row: int) -> int:
    """Row-space position of underlying row ``row`` (first position at or after it)."""
    if source.matrix is not None or source.index is None:
        return int(row)
    return int(np.searchsorted(source.index, row))


def moments_pass(sources: list[Source], block_rows: int, start: int = 0, stop: int | None = None, *,
                 pairs: Sequence[PairKey] | None = None, skip_diag: Sequence[int] = (),
                 edges: np.ndarray | None = None, on_rows: Callable[[int], None] | None = None) -> list[Moments]:
    """Accumulate moments of several sources with identical rows over underlying rows
    ``start:stop`` (the unit of work of both executors): only the blocks ``pairs`` needs,
    without the diagonal blocks of ``skip_diag``. One accumulator, or with ``edges`` one
    per row-space shard ``[edges[g], edges[g + 1])`` (shards outside the range stay empty).
    ``on_rows(k)`` is called after each block of ``k`` row-space rows (a progress bar)."""
    dims = [s.array.shape[1] for s in sources]
    count = 1 if edges is None else len(edges) - 1
    accs = [Moments.empty(dims, budget_bytes=GEMM_BUDGET, pairs=pairs, skip_diag=skip_diag) for _ in range(count)]
    pos = _position(sources[0], start)
    for blocks in zip(*(s.blocks(block_rows, start, stop) for s in sources)):
        rows = len(blocks[0])
        if not rows:
            continue
        if edges is None:
            accs[0].update(list(blocks))
        else:
            g, lo = int(np.searchsorted(edges, pos, side="right")) - 1, pos
            while lo < pos + rows:
                hi = min(pos + rows, int(edges[g + 1]))
                accs[g].update([b[lo - pos: hi - pos] for b in blocks])
                lo, g = hi, g + 1
        pos += rows
        if on_rows is not None:
            on_rows(rows)
    return accs
