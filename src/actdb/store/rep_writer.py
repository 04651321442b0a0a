"""Streaming one rep into the store: :class:`RepWriter` (two-phase: ``writing`` row, array, ``complete``)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import sqlalchemy as sa
import zarr.storage

from actdb.errors import DtypeOverflow, InvalidInput, UnderflowWarning
from actdb.store import arrays as A
from actdb.store import schema as S
from actdb.store.array_files import rep_attributes
from actdb.store.catalog import Catalog
from actdb.store.checksums import ChunkChecksums
from actdb.store.clock import now
from actdb.store.codecs import StoredDtype
from actdb.store.moments_files import drop_rows
from actdb.store.parse import as_numpy, check_finite, check_matrix
from actdb.store.records import RepRecord, stored_nbytes

_FINISH_COLS = ("status", "checksum", "completed_at", "rows_written", "n_nonfinite", "nbytes", "stat_mean", "stat_std",
                "stat_min", "stat_max", "stat_absmax")
_FINISH_REP = sa.text(f"UPDATE rep SET {', '.join(f'{c} = :{c}' for c in _FINISH_COLS)} WHERE id = :id")


class RepWriter:
    """Streams rows of one rep into its array, shard by shard, then commits it.

    Rows are buffered until a whole shard is full (so no shard file is ever rewritten),
    each flushed shard is recorded in the catalog (``rows_written``) so an interrupted
    write resumes there, and :meth:`finish` flips the rep to ``complete`` with its
    checksum and statistics in one transaction. Use as a context manager: an exception
    leaves the ``writing`` row for resume (or ``verify --repair``).
    """

    def __init__(self, catalog: Catalog, root: zarr.storage.StoreLike, record: Callable[[int], RepRecord],
                 rep_id: int, *, n_rows: int, dim: int, dtype: StoredDtype, site: str, chunk_rows: int,
                 shard_rows: int,
                 array: Any, start_row: int, stats: A.RowStats, allow_nonfinite: bool, replaces: int | None,
                 checksums: ChunkChecksums | None = None, underflow: int = 0):
        self._catalog, self._root, self._record = catalog, root, record
        self.rep_id = rep_id
        self.n_rows, self.dim, self.dtype, self.site = n_rows, dim, dtype, site
        self.shard_rows = shard_rows
        self._array = array
        self.rows_written = start_row
        self._stats = stats
        self._checksums = checksums if checksums is not None else ChunkChecksums(chunk_rows)
        self.underflow = underflow
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.allow_nonfinite = allow_nonfinite
        self.replaces = replaces
        self.info: RepRecord | None = None

    @property
    def done(self) -> bool:
        return self.rows_written + self._buffered >= self.n_rows

    def append(self, block: Any) -> None:
        """Append rows ``(k, dim)`` (numpy or torch, any float dtype)."""
        block = as_numpy(block, what=f"rows for site {self.site!r}")
        check_matrix(block, n_rows=None, what=f"rows for site {self.site!r}")
        if block.shape[1] != self.dim:
            raise InvalidInput(f"rows for site {self.site!r} have {block.shape[1]} columns, the rep has {self.dim}")
        if self.rows_written + self._buffered + len(block) > self.n_rows:
            raise InvalidInput(f"rep {self.rep_id} (site {self.site!r}) takes {self.n_rows} rows; "
                               f"{self.rows_written + self._buffered + len(block)} were given")
        if not self.allow_nonfinite:
            check_finite(block, what=f"activations at site {self.site!r}")
        check_range(block, self.dtype, self.site)
        stored = A.to_storage(block, self.dtype)
        self.underflow += count_underflow(block, stored, self.dtype)
        self._buffer.append(stored)
        self._buffered += len(block)
        while self._buffered >= self.shard_rows or (self._buffered and self.done):
            self._flush()

    def _flush(self) -> None:
        data = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        take = min(len(data), self.shard_rows)
        shard, rest = data[:take], data[take:]
        start = self.rows_written
        # checksums and statistics of a big shard run alongside zarr's encode and write
        stats = A.in_background(self._summarise, shard) if shard.nbytes >= 1 << 20 else None
        try:
            self._array[start: start + take] = shard
        finally:
            if stats is not None:
                stats.result()
        if stats is None:
            self._summarise(shard)
        self.rows_written += take
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)
        if self.rows_written < self.n_rows:  # the last shard is recorded by finish()
            with self._catalog.connect(write=True) as conn:
                conn.execute(S.rep.update().where(S.rep.c.id == self.rep_id).values(rows_written=self.rows_written))

    def _summarise(self, shard: np.ndarray) -> None:
        self._stats.update(shard)
        self._checksums.update(shard)

    def finish(self) -> RepRecord:
        """Commit: the rep becomes complete (and replaces the rep it overwrites, atomically)."""
        if self._buffered:
            self._flush()
        if self.rows_written != self.n_rows:
            raise InvalidInput(f"rep {self.rep_id} (site {self.site!r}) got {self.rows_written} of {self.n_rows} rows")
        named = self.info if self.info is not None else self._record(self.rep_id)
        A.seal(self._array, self._checksums.values, underflow=self.underflow, describe=rep_attributes(named))
        warn_underflow(self.underflow, self.n_rows * self.dim, self.dtype, self.site)
        values = dict(status="complete", checksum=self._stats.checksum, completed_at=now(),
                      rows_written=self.rows_written, n_nonfinite=self._stats.nonfinite,
                      nbytes=stored_nbytes(self.n_rows, self.dim, self.dtype), **self._stats.summary())
        with self._catalog.connect(write=True) as conn:
            if self.replaces is not None:
                conn.execute(S.rep.update().where(S.rep.c.id == self.replaces).values(status="replaced"))
                # the replaced rep's cached own moments can never be read again (its data is gone)
                drop_rows(conn, self._root, S.rep_moments.c.rep_id == self.replaces)
            conn.execute(_FINISH_REP, {**values, "id": self.rep_id})
        if self.replaces is not None:
            A.delete_array(self._root, A.rep_path(self.replaces))
        if self.info is None:
            self.info = self._record(self.rep_id)
        else:
            self.info = dataclasses.replace(self.info, status="complete", checksum=self._stats.checksum)
        return self.info

    def abort(self) -> None:
        """Discard this unfinished write: its ``writing`` catalog row and its array are removed
        (for errors a resume would only repeat, such as a dtype overflow)."""
        self._buffer, self._buffered = [], 0
        with self._catalog.connect(write=True) as conn:
            deleted = conn.execute(S.rep.delete().where(S.rep.c.id == self.rep_id, S.rep.c.status == "writing"))
        if deleted.rowcount:
            A.delete_array(self._root, A.rep_path(self.rep_id))

    def __enter__(self) -> RepWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None and not self.done:
            raise InvalidInput(f"rep {self.rep_id} (site {self.site!r}) closed after {self.rows_written} "
                               f"of {self.n_rows} rows; it stays 'writing' until resumed")
        if exc_type is None:
            self.finish()


UNDERFLOW_WARN_SHARE = 0.01  # real residual streams reach ~0.5% (MiniLM's last layer): harmless


def count_underflow(block: np.ndarray, stored: np.ndarray, dtype: str) -> int:
    """Values that were not zero but are stored as zero (too small for the stored dtype:
    below about 3e-8 in float16, about 1e-45 in bfloat16 and float32)."""
    if dtype == "float32" and block.dtype in (np.float32, np.float16):
        return 0
    if dtype == "float16" and block.dtype == np.float16:
        return 0
    zero = (stored & 0x7FFF) == 0 if dtype == "bfloat16" else stored == 0  # bfloat16: raw bits, either sign
    return int(np.count_nonzero(zero & (block != 0)))


def warn_underflow(count: int, total: int, dtype: str, site: str) -> None:
    """Warn when a noticeable share of a rep's values underflowed to zero."""
    if total and count / total > UNDERFLOW_WARN_SHARE:
        warnings.warn(UnderflowWarning(
            f"{count} of {total} values ({count / total:.2%}) at site {site!r} were too small for {dtype} and are "
            f"stored as 0; store them with dtype='float32' or dtype='bfloat16' to keep them"), stacklevel=3)


def check_range(block: np.ndarray, dtype: str, site: str) -> None:
    """Refuse values the stored dtype cannot hold (never a silent inf)."""
    limit = A.FLOAT16_MAX if dtype == "float16" else float(np.finfo(np.float32).max)
    if block.dtype == np.float16 and dtype == "float16":
        return
    absmax = float(np.nanmax(np.abs(np.where(np.isfinite(block), block, 0)))) if block.size else 0.0
    if absmax > limit:
        raise DtypeOverflow(
            f"activations at site {site!r} reach |x| = {absmax:.6g}, beyond the largest {dtype} "
            f"({limit:.6g}); store them with dtype='float32' or dtype='bfloat16'")
