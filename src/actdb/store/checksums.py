"""Per-chunk checksums of rep arrays: what makes a damaged chunk loud at read time.

Every chunk of a rep (``chunk_rows`` rows, the last one possibly shorter) gets a CRC-32C of
its rows in stored form (the little-endian bytes of the stored dtype, row-major), computed
while the rep is written and kept in the array's own ``zarr.json`` attributes
(``actdb_chunk_crc32c``, a list of ints) together with the rep's id (``actdb_rep_id``).
A read verifies each chunk it decodes against its entry, so a flipped byte, a shard copied
in from another rep, a deleted shard (zarr reads it as the fill value) or a shard of another
rep's array folder copied over this one is an error on the next read of that chunk, not a
wrong number.

The checksum is over decoded values, not compressed bytes: it holds whatever codec or
reader (zarr's, or the local shard reader) produced the rows. CRC-32C is the checksum zarr
itself uses; the ``crc32c`` package computes it with the CPU's instruction (far faster than
the reads it checks: the README's Storage section) straight from a NumPy buffer, where
``google_crc32c`` would need a copy into ``bytes`` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from actdb.errors import CorruptStore

CRC_ATTR = "actdb_chunk_crc32c"
REP_ATTR = "actdb_rep_id"


def crc32c(data: np.ndarray) -> int:
    """CRC-32C of an array's bytes (C order)."""
    from crc32c import crc32c as crc

    return int(crc(np.ascontiguousarray(data).data))


class ChunkChecksums:
    """Collects the checksums of a rep's chunks as its rows stream in, in order.

    Blocks must start on a chunk boundary (the rep writer flushes whole shards); a block
    that ends inside a chunk may only be the rep's last."""

    def __init__(self, chunk_rows: int, values: Sequence[int] = ()):
        self.chunk_rows = chunk_rows
        self.values: list[int] = list(values)
        self._closed = False

    def update(self, stored: np.ndarray) -> None:
        """Add rows ``(k, dim)`` in stored form."""
        if self._closed:
            raise ValueError("rows after a partial chunk: only a rep's last block may end inside a chunk")
        for start in range(0, len(stored), self.chunk_rows):
            part = stored[start: start + self.chunk_rows]
            self.values.append(crc32c(part))
            if len(part) < self.chunk_rows:
                self._closed = True


def parse_checksums(attrs: Any, *, rep_id: int, n_chunks: int, where: str) -> np.ndarray | None:
    """The per-chunk checksums recorded in an array's attributes, checked for shape and owner.

    None for an array written before checksums existed (``actdb verify --repair`` adds them
    once its whole-rep checksum has been confirmed). Raises CorruptStore when the attributes
    belong to another rep or do not cover the array's chunks."""
    owner = attrs.get(REP_ATTR)
    if owner is not None and owner != rep_id:
        raise CorruptStore(f"{where} holds the array of rep {owner!r}, not of rep {rep_id} (an array folder "
                           "copied or moved between reps); run `actdb verify --repair` to quarantine it")
    values = attrs.get(CRC_ATTR)
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != n_chunks \
            or not all(isinstance(v, int) and 0 <= v < 2**32 for v in values):
        raise CorruptStore(f"{where}: its chunk checksums ({CRC_ATTR}) are damaged: expected {n_chunks} "
                           "unsigned 32-bit integers; run `actdb verify --repair` to quarantine its rep")
    return np.asarray(values, dtype=np.uint64)


def check_chunk(expected: np.ndarray | None, chunk: int, rows: np.ndarray, *, rep_id: int, chunk_rows: int) -> None:
    """Raise CorruptStore when ``rows`` (chunk ``chunk`` whole, stored form) fail its checksum."""
    if expected is None:
        return
    got = crc32c(rows)
    if got != int(expected[chunk]):
        start = chunk * chunk_rows
        raise CorruptStore(
            f"rep {rep_id}: rows {start}:{start + len(rows)} (chunk {chunk}) do not match the checksum recorded "
            f"when they were written (crc32c {got:08x}, expected {int(expected[chunk]):08x}): a damaged, "
            "replaced or missing shard file. Run `actdb verify --repair` to quarantine the rep, then re-ingest it")
