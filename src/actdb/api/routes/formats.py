"""How routes answer: JSON, CSV or Arrow bodies, the format a client wants, shared
OpenAPI response declarations and the filter query parameter."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
from fastapi import Query, Request
from fastapi.responses import Response

from actdb.api import schemas as S

CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
PNG = "image/png"
ERRORS = S.error_responses(400, 401, 403, 404, 422, 503)
ROWS_ERRORS = S.error_responses(400, 401, 403, 404, 413, 422, 503)

FILTER_PATTERN = r"^[A-Za-z0-9_.\-*?\[\]/|:]+$"  # a filter value: names, globs, a|b lists, a:b ranges
SELECTION_PATTERN = r"^[A-Za-z0-9_.\-*?\[\]/|:=,]*$"  # a filter string: key=value,key=value


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):  # the catalog stores naive UTC: say so (RFC 3339)
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def json_response(payload: Any) -> Response:
    """``payload`` as compact JSON: non-finite floats as null, datetimes as RFC 3339 (UTC)."""
    body = json.dumps(_plain(payload), separators=(",", ":"), default=str, allow_nan=False)
    return Response(body, media_type="application/json")


def table_response(table: pa.Table, fmt: str, *, headers: dict[str, str] | None = None) -> Response:
    """``table`` as CSV (``fmt == "csv"``) or an Arrow IPC stream (otherwise)."""
    if fmt == "csv":
        import pyarrow.csv as pcsv

        from actdb.query.sql import csv_compatible

        buf = io.BytesIO()
        if table.num_columns:
            pcsv.write_csv(csv_compatible(table), buf)  # list/map/struct columns as JSON text
        return Response(buf.getvalue(), media_type=f"{CSV}; charset=utf-8", headers=headers)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return Response(sink.getvalue(), media_type=ARROW, headers=headers)


def wants(request: Request, fmt: str | None = None) -> str:
    """json | csv | arrow, from ``format=`` or the Accept header (JSON by default)."""
    if fmt:
        return fmt
    accept = request.headers.get("accept", "").lower()
    if ARROW in accept:
        return "arrow"
    if CSV in accept and "application/json" not in accept.split(CSV)[0]:
        return "csv"
    return "json"


def F(description: str = "Names, globs (*, ?), a|b alternatives; a:b ranges for numbers.") -> Any:
    """A filter query parameter (the selection filter syntax)."""
    return Query(None, max_length=200, pattern=FILTER_PATTERN, description=description)


def tabular(*, arrow: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a route that answers JSON, CSV or (``arrow``) Arrow IPC."""
    content: dict[str, Any] = {CSV: {"schema": {"type": "string"}}}
    if arrow:
        content[ARROW] = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"content": content, "description": "JSON (default), CSV or Arrow IPC by the Accept header"},
            **ERRORS}
