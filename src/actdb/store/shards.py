"""The local shard reader: rows of a rep's sharded array in a local folder, read chunk by chunk
with ``preadv`` and decoded by a small thread pool straight into the caller's buffer.

One of the two :class:`~actdb.store.readers.RowReader` implementations (the other is zarr's own,
:class:`~actdb.store.readers.ZarrRows`).
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import BloscCodec

from actdb.store.checksums import check_chunk
from actdb.store.readers import OpenedArray
from actdb.store.threads import read_pool

_MAX_U64 = 2**64 - 1
_BLOSC_HEADER = 16
_scratch = threading.local()


def _scratch_bytes(name: str, nbytes: int) -> memoryview:
    """A per-thread reusable buffer of ``nbytes`` (no allocation, no page faults per chunk)."""
    buf = getattr(_scratch, name, None)
    if buf is None or len(buf) < nbytes:
        buf = bytearray(nbytes)
        setattr(_scratch, name, buf)
    return memoryview(buf)[:nbytes]


def _endian_ok(codec: Any) -> bool:
    endian = getattr(codec, "endian", None)
    return getattr(endian, "value", endian) in (None, "little")


class LocalShards:
    """Reads rows of a rep's sharded array in a local folder, chunk by chunk, into the caller's buffer.

    Zarr (3.1) decodes every inner chunk into a new buffer, copies it into a new shard-sized
    buffer and copies that into the result, all the copies on its one event-loop thread
    (profiled reading a 1 GiB rep: those two copies dominated that thread's samples while the
    decoding threads mostly idled; figures in docs/reliability.md). Here each chunk is
    read with ``preadv`` into a per-thread buffer and decompressed by blosc straight into its
    rows of the result, by a small thread pool (both calls release the GIL): one pass over
    the file bytes, one over the result.

    Only the layout :func:`~actdb.store.array_files.create_array` writes is handled: 2-D, one ``sharding_indexed``
    codec with its index at the end (``bytes`` + ``crc32c``), inner chunks ``bytes``
    (little-endian) and at most one ``blosc`` codec, no transpose. :meth:`for_array` returns
    None for anything else (an object store, zstd, another writer's array) and the handle
    reads through zarr. Checks as zarr's: the shard index must pass its crc32c, chunk extents
    must lie inside the file, a blosc header must announce exactly one chunk; a missing shard
    or chunk holds the fill value (zarr does not store chunks of fill values). A complete rep
    is immutable, so shard indexes are cached per handle.
    """

    def __init__(self, folder: Path, keys: Any, *, n_rows: int, dim: int, dtype: np.dtype, shard_rows: int,
                 chunk_rows: int, blosc: bool, fill_value: Any, rep_id: int = 0,
                 checksums: np.ndarray | None = None):
        self.folder = folder
        self.rep_id = rep_id
        self.checksums = checksums
        self._key = keys
        self.n_rows, self.dim, self.dtype = n_rows, dim, dtype
        self.shard_rows, self.chunk_rows = shard_rows, chunk_rows
        self.chunks_per_shard = shard_rows // chunk_rows
        self.chunk_nbytes = chunk_rows * dim * dtype.itemsize
        self.blosc = blosc
        self.fill_value = fill_value
        self._index: dict[int, tuple[np.ndarray, int]] = {}

    @classmethod
    def for_array(cls, opened: OpenedArray) -> LocalShards | None:
        """A reader for an opened array when it is in a local folder with the layout actdb writes
        (a codec this reader decodes), else None."""
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

        root, array = opened.root, opened.array
        if not isinstance(root, zarr.storage.LocalStore) or sys.byteorder != "little":
            return None
        meta = array.metadata
        codecs: tuple[Any, ...] = tuple(getattr(meta, "codecs", ()))
        if getattr(meta, "zarr_format", None) != 3 or len(array.shape) != 2 or len(codecs) != 1:
            return None
        shard = codecs[0]
        if not isinstance(shard, ShardingCodec) or getattr(shard.index_location, "value", None) != "end":
            return None
        index_codecs, inner = list(shard.index_codecs), list(shard.codecs)
        if [type(c) for c in index_codecs] != [BytesCodec, Crc32cCodec] or not _endian_ok(index_codecs[0]):
            return None
        if not inner or type(inner[0]) is not BytesCodec or not _endian_ok(inner[0]) or len(inner) > 2 \
                or (len(inner) == 2 and type(inner[1]) is not BloscCodec):
            return None
        shard_shape = tuple(getattr(meta.chunk_grid, "chunk_shape", ()))
        chunk_shape = tuple(shard.chunk_shape)
        n_rows, dim = array.shape
        dtype = np.dtype(array.dtype)
        if len(shard_shape) != 2 or len(chunk_shape) != 2 or shard_shape[1] != dim or chunk_shape[1] != dim \
                or chunk_shape[0] < 1 or shard_shape[0] % chunk_shape[0] or dtype.hasobject or dim < 1:
            return None
        return cls(Path(root.root) / opened.path, meta.encode_chunk_key, n_rows=n_rows, dim=dim, dtype=dtype,
                   shard_rows=shard_shape[0], chunk_rows=chunk_shape[0], blosc=len(inner) == 2,
                   fill_value=meta.fill_value, rep_id=opened.rep_id, checksums=opened.checksums)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (``0 <= start < stop <= n_rows``) in stored form, in a new array."""
        out = np.empty((stop - start, self.dim), dtype=self.dtype)
        self.read_into(start, stop, out)
        return out

    def read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows ``start:stop`` (``0 <= start < stop <= n_rows``) into ``out`` ``(stop - start, dim)``.

        Raises ValueError naming the shard for damaged data (the caller turns it into CorruptStore)."""
        cr, cps = self.chunk_rows, self.chunks_per_shard
        first, last = start // cr, (stop - 1) // cr
        jobs: list[tuple[int, int, int, np.ndarray, int, int, int]] = []
        fds: list[int] = []
        try:
            for s in range(first // cps, last // cps + 1):
                c0, c1 = max(first, s * cps), min(last, s * cps + cps - 1)
                try:
                    fd = os.open(self.folder / self._key((s, 0)), os.O_RDONLY)
                except FileNotFoundError:  # a shard of fill values only is not stored
                    out[max(start, c0 * cr) - start: min(stop, (c1 + 1) * cr) - start] = self.fill_value
                    for c in range(c0, c1 + 1):
                        self._check_fill(c)
                    continue
                fds.append(fd)
                index, end = self._shard_index(s, fd)
                for c in range(c0, c1 + 1):
                    r0, r1 = max(start, c * cr), min(stop, c * cr + cr)
                    offset, nbytes = (int(v) for v in index[c - s * cps])
                    dest = out[r0 - start: r1 - start]
                    if offset == _MAX_U64 and nbytes == _MAX_U64:
                        dest[...] = self.fill_value
                        self._check_fill(c)
                    elif offset + nbytes > end:
                        raise ValueError(f"shard {self._key((s, 0))}: chunk {c - s * cps} lies at bytes "
                                         f"{offset}..{offset + nbytes}, beyond the {end} bytes of data before "
                                         "its index (a truncated or damaged shard)")
                    else:
                        jobs.append((fd, offset, nbytes, dest, r0 - c * cr, r1 - c * cr, c))
            self._run(jobs)
        finally:
            for fd in fds:
                os.close(fd)

    def _run(self, jobs: list[tuple[int, int, int, np.ndarray, int, int, int]]) -> None:
        if len(jobs) <= 1:  # one chunk: no hand-off to the pool
            for job in jobs:
                self._decode(*job)
            return
        futures: list[Future[None]] = [read_pool().submit(self._decode, *job) for job in jobs]
        errors = [f.exception() for f in futures]  # wait for every job: the files close after this
        for exc in errors:
            if exc is not None:
                raise exc

    def _shard_index(self, s: int, fd: int) -> tuple[np.ndarray, int]:
        """(offset, nbytes) of each chunk of shard ``s``, and where its data ends."""
        hit = self._index.get(s)
        if hit is not None:
            return hit
        import google_crc32c  # zarr's own crc32c implementation

        size = os.fstat(fd).st_size
        nbytes = 16 * self.chunks_per_shard + 4
        raw = os.pread(fd, nbytes, size - nbytes) if size >= nbytes else b""
        if len(raw) != nbytes or google_crc32c.value(raw[:-4]).to_bytes(4, "little") != raw[-4:]:
            raise ValueError(f"shard {self._key((s, 0))} ({size} bytes): its index fails its crc32c check "
                             "(a truncated or damaged shard)")
        entry = (np.frombuffer(raw[:-4], "<u8").reshape(self.chunks_per_shard, 2), size - nbytes)
        self._index[s] = entry
        return entry

    def _valid_rows(self, chunk: int) -> int:
        """Rows of chunk ``chunk`` inside the array (the last chunk may be short)."""
        return min(self.chunk_rows, self.n_rows - chunk * self.chunk_rows)

    def _check_fill(self, chunk: int) -> None:
        """A chunk that is not stored reads as the fill value: right only if it was written so."""
        if self.checksums is not None:
            rows = np.full((self._valid_rows(chunk), self.dim), self.fill_value, dtype=self.dtype)
            check_chunk(self.checksums, chunk, rows, rep_id=self.rep_id, chunk_rows=self.chunk_rows)

    def _decode(self, fd: int, offset: int, nbytes: int, dest: np.ndarray, lo: int, hi: int, chunk: int) -> None:
        """One stored chunk into ``dest`` (its rows ``lo:hi``), checked against its checksum."""
        whole = lo == 0 and hi == self.chunk_rows
        valid = self._valid_rows(chunk)
        check = self.checksums
        if not self.blosc and nbytes != self.chunk_nbytes:
            raise ValueError(f"a chunk of {nbytes} bytes where {self.chunk_nbytes} were expected")
        if not self.blosc and whole:
            got = os.preadv(fd, [dest.reshape(-1).view(np.uint8).data], offset)
        else:
            buf = _scratch_bytes("file", nbytes)
            got = os.preadv(fd, [buf], offset)
        if got != nbytes:
            raise ValueError(f"read {got} of a chunk's {nbytes} bytes (a truncated shard)")
        if not self.blosc:
            if whole:
                check_chunk(check, chunk, dest, rep_id=self.rep_id, chunk_rows=self.chunk_rows)
            else:
                rows = np.frombuffer(buf, self.dtype).reshape(self.chunk_rows, self.dim)
                check_chunk(check, chunk, rows[:valid], rep_id=self.rep_id, chunk_rows=self.chunk_rows)
                dest[...] = rows[lo:hi]
            return
        header = bytes(buf[:_BLOSC_HEADER])
        size = int.from_bytes(header[4:8], "little") if len(header) == _BLOSC_HEADER else -1
        if size != self.chunk_nbytes or int.from_bytes(header[12:16], "little") != nbytes:
            raise ValueError(f"a blosc chunk header announces {size} bytes in {nbytes}, not one chunk of "
                             f"{self.chunk_nbytes} bytes (a damaged shard)")
        from numcodecs import blosc

        if whole:
            blosc.decompress(buf, dest)
            check_chunk(check, chunk, dest, rep_id=self.rep_id, chunk_rows=self.chunk_rows)
        else:
            decoded = np.frombuffer(_scratch_bytes("chunk", self.chunk_nbytes), self.dtype)
            blosc.decompress(buf, decoded)
            rows = decoded.reshape(self.chunk_rows, self.dim)
            check_chunk(check, chunk, rows[:valid], rep_id=self.rep_id, chunk_rows=self.chunk_rows)
            dest[...] = rows[lo:hi]
