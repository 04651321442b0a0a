"""A rep's rows and token labels over HTTP (``GET /v1/reps/{id}/rows`` and ``/tokens``).

Rows go out as an Arrow IPC stream: a ``row`` column (int64, the rep's row numbers) and
one ``values`` column of fixed-size lists (``dim`` floats a row, float16 or float32 as
stored; bfloat16 reps go out as float32). A client reads them back with
``pyarrow.ipc.open_stream(body).read_all()`` and
``table["values"].combine_chunks().flatten().to_numpy().reshape(-1, dim)``; the schema
metadata carries the rep's identity (rep_id, model, checkpoint, site, dataset, pooling,
dtype, dim, n_rows, start, stop). Each request is bounded by rows and by bytes; a range
over either bound is refused with 413 and the largest range that fits, so a client pages.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa

from actdb.errors import InvalidInput, NotFound

MAX_ROWS = 100_000
MAX_BYTES = 64 * 2**20


class TooLarge(InvalidInput):
    """A request for more rows or bytes than the server sends at once (HTTP 413)."""


def find_rep(db: Any, rep_id: int) -> Any:
    """The handle of complete local rep ``rep_id``, or NotFound saying how to list them."""
    found = db.reps(rep_id=rep_id).resolve()
    if not found:
        raise NotFound(f"no complete rep with id {rep_id} in this store; list the reps and their ids with "
                       "GET /v1/reps")
    from actdb.query.handle import RepHandle

    return RepHandle(found[0], db)


def row_range(n_rows: int, start: int, stop: int | None, *, what: str = "rows") -> tuple[int, int]:
    """``[start, stop)`` checked against a rep of ``n_rows`` rows (``stop`` None: the end)."""
    stop = n_rows if stop is None else stop
    if start < 0 or stop < 0:
        raise InvalidInput(f"{what} start={start}, stop={stop}: give row numbers >= 0")
    if start > n_rows or stop > n_rows:
        raise InvalidInput(f"{what} {start}:{stop} are out of range: the rep has {n_rows} rows "
                           f"(give 0 <= start <= stop <= {n_rows})")
    if start > stop:
        raise InvalidInput(f"{what} start={start} is after stop={stop}; give start <= stop")
    return start, stop


def check_size(start: int, stop: int, dim: int, itemsize: int, *, max_rows: int, max_bytes: int) -> None:
    """Refuse (``TooLarge``) a range over the row or byte limit, naming the range that fits."""
    rows = stop - start
    fits = max(1, min(max_rows, max_bytes // max(1, dim * itemsize)))
    if rows > max_rows:
        raise TooLarge(f"rows {start}:{stop} are {rows:,} rows, more than this server sends at once "
                       f"({max_rows:,}); ask for at most {fits:,} rows a request, e.g. "
                       f"start={start}&stop={start + fits}, and page with start=")
    if rows * dim * itemsize > max_bytes:
        raise TooLarge(f"rows {start}:{stop} are {rows * dim * itemsize:,} bytes ({dim} values of {itemsize} "
                       f"bytes a row), more than this server sends at once ({max_bytes:,} bytes); ask for at most "
                       f"{fits:,} rows a request, e.g. start={start}&stop={start + fits}")


def rows_ipc(handle: Any, start: int, stop: int | None, *, max_rows: int = MAX_ROWS,
             max_bytes: int = MAX_BYTES) -> bytes:
    """Rows ``start:stop`` of a rep as Arrow IPC stream bytes (see the module docstring)."""
    r = handle.record
    start, stop = row_range(r.n_rows, start, stop)
    itemsize = 2 if r.dtype == "float16" else 4
    check_size(start, stop, r.dim, itemsize, max_rows=max_rows, max_bytes=max_bytes)
    values = handle.to_numpy(rows=slice(start, stop))
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(flat, r.dim)
    meta = {"rep_id": r.rep_id, "model": r.model, "checkpoint": r.checkpoint, "site": r.site, "dataset": r.dataset,
            "pooling": r.pooling, "dtype": str(values.dtype), "dim": r.dim, "n_rows": r.n_rows, "start": start,
            "stop": stop}
    schema = pa.schema([("row", pa.int64()), ("values", column.type)],
                       metadata={f"actdb.{k}": str(v) for k, v in meta.items()})
    table = pa.table([pa.array(np.arange(start, stop, dtype=np.int64)), column], schema=schema)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def tokens_page(handle: Any, offset: int, limit: int) -> tuple[pa.Table, int]:
    """Rows ``offset:offset+limit`` of a rep's labels (:meth:`RepHandle.tokens`) and their total."""
    table = handle.tokens()
    total = table.num_rows
    if offset > total:
        raise InvalidInput(f"offset={offset} is past the rep's {total} rows; give 0 <= offset <= {total}")
    return table.slice(offset, limit), total
