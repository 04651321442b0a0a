"""A rep's rows and token labels over HTTP: ``GET /v1/reps/{id}/rows`` and ``/tokens``.

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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, Query, Request
from fastapi import Path as Path_
from fastapi.responses import Response

from actdb.api import schemas as S
from actdb.api.routes.deps import DbDep, GateDep, Limits
from actdb.api.routes.formats import ARROW, ROWS_ERRORS, json_response, table_response, tabular, wants
from actdb.database import Database
from actdb.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from actdb.query.handle import RepHandle

MAX_ROWS = 100_000
MAX_BYTES = 64 * 2**20


class TooLarge(InvalidInput):
    """A request for more rows or bytes than the server sends at once (HTTP 413)."""


def find_rep(db: Database, rep_id: int) -> RepHandle:
    """The handle of complete local rep ``rep_id``, or NotFound saying how to list them."""
    found = list(db.reps(rep_id=rep_id))  # the selection yields handles; catalog only
    if not found:
        raise NotFound(f"no complete rep with id {rep_id} in this store; list the reps and their ids with "
                       "GET /v1/reps")
    return found[0]


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


def rows_ipc(handle: RepHandle, start: int, stop: int | None, *, max_rows: int = MAX_ROWS,
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


def tokens_page(handle: RepHandle, offset: int, limit: int) -> tuple[pa.Table, int]:
    """Rows ``offset:offset+limit`` of a rep's labels (:meth:`RepHandle.tokens`) and their total."""
    table = handle.tokens()
    total = table.num_rows
    if offset > total:
        raise InvalidInput(f"offset={offset} is past the rep's {total} rows; give 0 <= offset <= {total}")
    return table.slice(offset, limit), total


def router(limits: Limits) -> APIRouter:
    """The rows and tokens routes under ``limits`` (``rows_max`` is in the schema: a tokens
    page's default and maximum size)."""
    r = APIRouter(tags=["catalog"])

    @r.get("/reps/{rep_id}/rows", response_class=Response, responses={
        200: {"content": {ARROW: {"schema": {"type": "string", "format": "binary"}}},
              "description": "Arrow IPC stream: columns row (int64) and values (fixed-size list of dim floats)"},
        **ROWS_ERRORS})
    def rep_rows(db: DbDep, gate: GateDep,
                 rep_id: int = Path_(ge=0, le=2**62, description="The rep's id (GET /v1/reps)."),
                 start: int = Query(0, ge=0, le=2**62, description="First row (0-based)."),
                 stop: int | None = Query(None, ge=0, le=2**62, description="One past the last row (default: "
                                                                             "the end).")) -> Any:
        """Rows ``start:stop`` of a rep's values as an Arrow IPC stream: a ``row`` column and a
        ``values`` column of fixed-size lists (``dim`` floats, float16 or float32 as stored);
        schema metadata ``actdb.*`` names the rep. At most ``rows_max`` rows and
        ``rows_max_bytes`` bytes a request (413 beyond, with a range that fits): page with ``start``.
        """
        with gate.shared():
            body = rows_ipc(find_rep(db, rep_id), start, stop, max_rows=limits.rows_max,
                            max_bytes=limits.rows_max_bytes)
        return Response(body, media_type=ARROW)

    @r.get("/reps/{rep_id}/tokens", response_model=S.TokensOut,
           responses=tabular(arrow=True) | {413: ROWS_ERRORS[413]})
    def rep_tokens(request: Request, db: DbDep, gate: GateDep,
                   rep_id: int = Path_(ge=0, le=2**62, description="The rep's id (GET /v1/reps)."),
                   limit: int = Query(min(1000, limits.rows_max), ge=1, le=limits.rows_max),
                   offset: int = Query(0, ge=0, le=2**62),
                   format: Literal["json", "csv", "arrow"] | None = Query(
                       None, description="Override the Accept header.")) -> Any:
        """The labels of a rep's rows, paginated: row, example, and for token-level reps
        position, token_id, token, char_start, char_end, special; the example's label and split.
        JSON (default), CSV or Arrow; the total in ``total`` (JSON) or header ``X-Total-Count``."""
        fmt = wants(request, format)
        with gate.shared():
            table, total = tokens_page(find_rep(db, rep_id), offset, limit)
        if fmt == "json":
            nxt = offset + table.num_rows if offset + table.num_rows < total else None
            return json_response({"rows": table.to_pylist(), "total": total, "limit": limit, "offset": offset,
                                  "next_offset": nxt})
        return table_response(table, fmt, headers={"X-Total-Count": str(total)})

    return r
