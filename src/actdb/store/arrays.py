"""Rep arrays on Zarr v3: how a rep is cut into chunks and shards, and the lazy read handle
:class:`RepArray` with the choice of its row reader.

One array per rep, shape ``(n_rows, dim)``, chunked along rows only (chunks of about
2 MiB, :data:`CHUNK_BYTES`) and sharded (about 32 chunks, 64 MiB, per shard file), so a rep
of a million rows is a handful of files. The rest of the array code lives beside this module
and its public names are re-exported here: paths, creating, listing and deleting arrays
(:mod:`~actdb.store.array_files`), codecs and stored dtypes (:mod:`~actdb.store.codecs`),
per-chunk checksums (:mod:`~actdb.store.checksums`), write statistics
(:mod:`~actdb.store.stats`), the row readers (:mod:`~actdb.store.readers`,
:mod:`~actdb.store.shards`) and the store's threads (:mod:`~actdb.store.threads`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import zarr
import zarr.storage

from actdb.errors import CorruptStore, InvalidInput
from actdb.store.array_files import (
    MOMENTS_PATH,
    REP_PATH,
    array_exists,
    check_metadata,
    checked_path,
    create_array,
    delete_array,
    list_arrays,
    moments_path,
    open_array,
    open_root,
    parse_arrays_url,
    rep_path,
    seal,
)
from actdb.store.checksums import parse_checksums
from actdb.store.codecs import (
    CODECS,
    DEFAULT_CODEC,
    FLOAT16_MAX,
    NUMPY_STORAGE,
    codec_chain,
    from_storage,
    parse_dtype,
    to_storage,
)
from actdb.store.readers import OpenedArray, OpenReader, RowReader, ZarrRows
from actdb.store.shards import LocalShards
from actdb.store.stats import RowStats
from actdb.store.threads import in_background, read_threads

__all__ = [
    "CHUNKS_PER_SHARD", "CHUNK_BYTES", "CODECS", "DEFAULT_CODEC", "FLOAT16_MAX", "MOMENTS_PATH", "REP_PATH",
    "RepArray", "RowStats", "array_exists", "checked_path", "choose_reader", "codec_chain", "create_array",
    "delete_array", "from_storage", "in_background", "layout", "list_arrays", "moments_path", "open_array",
    "open_root", "parse_arrays_url", "parse_dtype", "read_threads", "rep_path", "seal", "to_storage",
]

CHUNK_BYTES = 2 << 20  # read by layout() at each call: tests and tools shrink it on this module
CHUNKS_PER_SHARD = 32


def layout(n_rows: int, dim: int, itemsize: int) -> tuple[int, int]:
    """(chunk_rows, shard_rows) for a rep: chunks of at most ~2 MiB holding a power-of-two
    number of rows (so the chunk boundaries of reps of different widths line up, and a
    query reading several reps block by block decodes every chunk exactly once), 32
    chunks a shard."""
    fit = max(1, CHUNK_BYTES // max(1, dim * itemsize))
    chunk_rows = 1 << (fit.bit_length() - 1)
    if chunk_rows >= n_rows:
        chunk_rows = max(1, n_rows)
    shard_rows = chunk_rows * CHUNKS_PER_SHARD
    if shard_rows > n_rows:  # a small rep: one shard, whole chunks
        shard_rows = -(-max(1, n_rows) // chunk_rows) * chunk_rows
    return chunk_rows, shard_rows


def choose_reader(opened: OpenedArray) -> RowReader:
    """The reader of an opened array: the local shard reader when the array is in a local folder
    with a layout and codec it decodes (chunks decoded in parallel straight into the returned
    block), zarr's own reader otherwise (object stores, zstd, another writer's array)."""
    local = LocalShards.for_array(opened)
    return local if local is not None else ZarrRows(opened)


class RepArray:
    """A lazy, read-only handle on one stored rep: nothing is read until indexed.

    ``handle[a:b]`` reads only the chunks covering rows a..b and returns them decoded
    ``(b - a, dim)`` in the stored precision (float16 stays float16, no copy; bfloat16
    is widened to float32); :meth:`iter_blocks` streams the whole rep in
    shard-sized blocks. ``reads`` counts decoded row blocks (tests use it to prove
    laziness). On first use the array is opened, its metadata checked against the catalog
    record and its chunk checksums loaded; then ``reader`` (by default :func:`choose_reader`)
    builds the :class:`~actdb.store.readers.RowReader` every read goes through.
    """

    def __init__(self, root: zarr.storage.StoreLike, path: str, *, rep_id: int, n_rows: int, dim: int,
                 dtype: str, chunk_rows: int, shard_rows: int, codec: str | None = None,
                 reader: OpenReader = choose_reader):
        self._root = root
        self.path = checked_path(rep_id, path)
        self.codec = codec
        self.rep_id = rep_id
        self.shape = (n_rows, dim)
        self.dtype = dtype
        self.chunk_rows = chunk_rows
        self.shard_rows = shard_rows
        self._open_reader = reader
        self._has_checksums = False
        self._reader: RowReader | None = None
        self.reads = 0
        self.chunks_read = 0

    def with_reader(self, reader: OpenReader) -> RepArray:
        """A fresh handle on the same rep whose rows come from ``reader`` (e.g.
        :class:`~actdb.store.readers.ZarrRows`, to compare with the local shard reader)."""
        return RepArray(self._root, self.path, rep_id=self.rep_id, n_rows=self.shape[0], dim=self.shape[1],
                        dtype=self.dtype, chunk_rows=self.chunk_rows, shard_rows=self.shard_rows, codec=self.codec,
                        reader=reader)

    def __repr__(self) -> str:
        return f"RepArray(rep_id={self.rep_id}, shape={self.shape}, dtype={self.dtype})"

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def value_dtype(self) -> np.dtype:
        """The NumPy dtype reads return (``float16`` or ``float32``)."""
        return np.dtype(np.float16) if self.dtype == "float16" else np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * NUMPY_STORAGE[self.dtype].itemsize

    def _rows(self) -> RowReader:
        """The row reader, built once: the array opened, its metadata checked against the catalog
        record and its per-chunk checksums loaded (None for an array written before they existed)."""
        if self._reader is None:
            arr = open_array(self._root, self.path)
            check_metadata(arr, rep_id=self.rep_id, n_rows=self.shape[0], dim=self.shape[1], dtype=self.dtype,
                           chunk_rows=self.chunk_rows, shard_rows=self.shard_rows, codec=self.codec)
            n_chunks = -(-self.shape[0] // self.chunk_rows)
            checksums = parse_checksums(arr.attrs, rep_id=self.rep_id, n_chunks=n_chunks,
                                        where=f"array {self.path!r}")
            self._has_checksums = checksums is not None
            self._reader = self._open_reader(OpenedArray(self._root, self.path, arr, rep_id=self.rep_id,
                                                         chunk_rows=self.chunk_rows, checksums=checksums))
        return self._reader

    @property
    def has_checksums(self) -> bool:
        """Whether reads of this rep are verified chunk by chunk (arrays written since checksums)."""
        self._rows()
        return self._has_checksums

    def read_stored(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in their stored bit pattern."""
        start, stop = max(0, start), min(stop, self.shape[0])
        self.reads += 1
        if stop > start:
            self.chunks_read += (stop - 1) // self.chunk_rows - start // self.chunk_rows + 1
        reader = self._rows()
        if stop <= start:
            return np.empty((0, self.shape[1]), dtype=NUMPY_STORAGE[self.dtype])
        try:
            return reader.read(start, stop)
        except CorruptStore:
            raise
        except (ValueError, OSError, RuntimeError) as exc:  # a shard that fails its crc32c, truncated, ...
            raise CorruptStore(f"rep {self.rep_id}: rows {start}:{stop} of {self.path!r} cannot be decoded "
                               f"({type(exc).__name__}: {exc}); run `actdb verify --repair`") from None

    def __getitem__(self, key: slice | int) -> np.ndarray:
        if isinstance(key, int):
            idx = key + self.shape[0] if key < 0 else key
            if not 0 <= idx < self.shape[0]:
                raise IndexError(f"row {key} out of range for a rep of {self.shape[0]} rows")
            row: np.ndarray = self[idx: idx + 1][0]
            return row
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise InvalidInput("a rep is indexed by a row slice (rep[a:b]) or a row number")
        start, stop, _ = key.indices(self.shape[0])
        return from_storage(self.read_stored(start, stop), self.dtype)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Rows at sorted or unsorted integer positions (reads only the chunks touched)."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), self.shape[1]), dtype=self.value_dtype)
        order = np.argsort(index, kind="stable")
        sorted_idx = index[order]
        chunk_of = sorted_idx // self.chunk_rows
        for c in np.unique(chunk_of):
            sel = chunk_of == c
            block = self[int(c) * self.chunk_rows: (int(c) + 1) * self.chunk_rows]
            out[order[sel]] = block[sorted_idx[sel] - int(c) * self.chunk_rows]
        return out

    def iter_blocks(self, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, rows)`` blocks in order, rows ``(k, dim)`` as :attr:`value_dtype`."""
        step = block_rows or self.shard_rows
        for start in range(0, self.shape[0], step):
            yield start, self[start: start + step]

    def to_numpy(self) -> np.ndarray:
        return self[0: self.shape[0]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.to_numpy()
        return out if dtype is None else out.astype(dtype)
