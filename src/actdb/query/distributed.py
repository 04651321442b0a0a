"""The Dask executor: a moments pass split into row ranges over dask.distributed workers.

Each task opens the reps' arrays itself (by store location and path, read-only), reads
its row range block by block and returns serialised partial :class:`Moments`; the client
sums them (exactly: moments merge by ``+``). Without an ``address`` a LocalCluster of
worker processes is started for the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from actdb.errors import InvalidInput

if TYPE_CHECKING:
    from actdb.query.rows import Source
    from actdb.query.storage import Storage
    from actdb.store.records import RepRecord


def _partial(specs: list[dict[str, Any]], index: np.ndarray | None, block_rows: int, start: int, stop: int,
             pairs: list[tuple[int, int]] | None = None, skip_diag: list[int] | None = None,
             edges: np.ndarray | None = None) -> list[tuple[int, bytes]]:
    """Moments of rows ``start:stop``: (shard, serialised Moments) for each shard with rows."""
    from actdb.query.passes import moments_pass
    from actdb.query.rows import Source
    from actdb.store.arrays import RepArray, open_root

    sources = []
    for s in specs:
        root = open_root(s["location"], read_only=True, storage_options=s.get("storage_options"))
        arr = RepArray(root, s["path"], rep_id=s["rep_id"], n_rows=s["n_rows"], dim=s["dim"], dtype=s["dtype"],
                       chunk_rows=s["chunk_rows"], shard_rows=s["shard_rows"])
        sources.append(Source(arr, index))
    parts = moments_pass(sources, block_rows, start, stop, pairs=pairs, skip_diag=skip_diag or (), edges=edges)
    return [(g, m.to_bytes()) for g, m in enumerate(parts) if m.n or len(parts) == 1]


def dask_moments(storage: Storage, reps: list[RepRecord], sources: list[Source], block_rows: int,
                 address: str | None, n_tasks: int | None = None, *, pairs: list[tuple[int, int]] | None = None,
                 skip_diag: list[int] | None = None, edges: np.ndarray | None = None,
                 on_rows: Callable[[int], None] | None = None) -> list[Any]:
    """Moments of ``reps`` over their shared rows, computed on a Dask cluster: the blocks
    ``pairs`` needs, without the ``skip_diag`` diagonals; one accumulator, or one per
    row-space shard of ``edges`` (as :func:`actdb.query.executor.moments_pass`).
    ``on_rows(k)`` is called as each task finishes, with its ``k`` row-space rows."""
    from distributed import Client, LocalCluster, as_completed

    from actdb.query.moments import Moments

    if any(s.matrix is not None for s in sources):
        raise InvalidInput("the dask executor streams stored rows; aligned (pooled) row spaces run with "
                           "executor='local'")
    specs = [{"location": storage.array_location(r)[0],
              "storage_options": storage.array_location(r)[1], "path": r.path, "rep_id": r.rep_id,
              "n_rows": r.n_rows, "dim": r.dim, "dtype": r.dtype, "chunk_rows": r.chunk_rows,
              "shard_rows": r.shard_rows} for r in reps]
    index = sources[0].index
    extent = sources[0].extent
    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(address or cluster)
    try:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        parts = n_tasks or max(1, 2 * workers)
        step = max(block_rows, -(-extent // parts // block_rows) * block_rows)
        ranges = [(s, min(extent, s + step)) for s in range(0, extent, step)]
        futures = [client.submit(_partial, specs, index, block_rows, s, e, pairs, skip_diag, edges, pure=False)
                   for s, e in ranges]
        if on_rows is not None:  # ticks as tasks finish; the sum below stays in submission order
            rows = {f.key: e - s if index is None else int(np.searchsorted(index, e) - np.searchsorted(index, s))
                    for f, (s, e) in zip(futures, ranges)}
            for done in as_completed(futures):
                on_rows(rows[done.key])
        count = 1 if edges is None else len(edges) - 1
        totals = [Moments.empty([r.dim for r in reps], pairs=pairs, skip_diag=skip_diag or ()) for _ in range(count)]
        for parts in client.gather(futures):
            for g, blob in parts:
                totals[g] = totals[g] + Moments.from_bytes(blob)
        return totals
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
