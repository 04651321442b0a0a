"""``POST /v1/sql``: one read-only SELECT over the catalog views, within the server's limits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from actdb.api import schemas as S
from actdb.api.routes.deps import GateDep, LimitsDep
from actdb.api.routes.formats import json_response, table_response, tabular, wants

router = APIRouter(tags=["sql"])


@router.post("/sql", response_model=S.SqlOut, responses=tabular())
def sql(body: S.SqlRequest, request: Request, gate: GateDep, limits: LimitsDep) -> Any:
    """One read-only SELECT over the catalog views, within the server's row and time limits.

    More rows than the limit is an error (400), not a silent cut; so is a query running
    past the time limit. ``Accept: text/csv`` for CSV.
    """
    max_rows = min(body.max_rows or limits.sql_max_rows, limits.sql_max_rows)
    timeout = min(body.timeout or limits.sql_timeout, limits.sql_timeout)
    table = gate.exclusive(lambda db: db.sql(body.query, max_rows=max_rows, timeout=timeout,
                                             max_bytes=limits.sql_max_bytes, memory_limit=limits.sql_memory_limit))
    if wants(request) == "csv":
        return table_response(table, "csv")
    return json_response({"columns": table.column_names, "rows": table.to_pylist()})
