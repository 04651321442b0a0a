"""How a :class:`~actdb.store.arrays.RepArray` gets its rows: the :class:`RowReader` contract,
what a reader is built from (:class:`OpenedArray`), and zarr's own reader (:class:`ZarrRows`).

The other implementation is the local shard reader (:class:`~actdb.store.shards.LocalShards`);
:func:`~actdb.store.arrays.choose_reader` picks one of the two for an array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import zarr
import zarr.storage

from actdb.store.checksums import check_chunk


@dataclass(frozen=True)
class OpenedArray:
    """A rep's zarr array, opened and its metadata checked against the catalog record;
    ``checksums`` are its per-chunk CRC-32Cs (None for an array written before they existed)."""

    root: zarr.storage.StoreLike
    path: str
    array: zarr.Array[Any]
    rep_id: int
    chunk_rows: int
    checksums: np.ndarray | None


class RowReader(Protocol):
    """Reads rows of one opened rep array in stored form."""

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (``0 <= start < stop <= n_rows``) in stored form, ``(stop - start, dim)``,
        every chunk they touch checked against its checksum (CorruptStore). Damaged data that
        cannot be decoded raises ValueError, OSError or RuntimeError (the handle names the rep)."""
        ...


OpenReader = Callable[[OpenedArray], RowReader]
"""Builds the reader of an opened array (injected into a RepArray)."""


class ZarrRows:
    """Rows through zarr (any store, any codec zarr decodes). With checksums, whole chunks are
    read (zarr decodes them anyway) and each is verified before the requested rows are cut out."""

    def __init__(self, opened: OpenedArray):
        self.array = opened.array
        self.checksums = opened.checksums
        self.rep_id = opened.rep_id
        self.chunk_rows = opened.chunk_rows
        self.n_rows = int(opened.array.shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.checksums is None or stop <= start:
            return np.asarray(self.array[start:stop])
        cr = self.chunk_rows
        lo, hi = start // cr * cr, min(self.n_rows, -(-stop // cr) * cr)
        block = np.asarray(self.array[lo:hi])
        for c in range(lo // cr, -(-hi // cr)):
            check_chunk(self.checksums, c, block[c * cr - lo: (c + 1) * cr - lo], rep_id=self.rep_id, chunk_rows=cr)
        return block[start - lo: stop - lo]

