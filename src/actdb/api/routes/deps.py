"""What a route gets from the app: the open Database, its Gate, the server's limits, auth.

:func:`actdb.api.app.create_app` puts them on ``app.state``; a route asks for them by
annotation (``db: DbDep``, ``gate: GateDep``, ``limits: LimitsDep``). The accessors are
``async`` so that they run on the event loop and cost no thread-pool hop; the routes
themselves are plain ``def`` and run in the thread pool.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from actdb.api.gate import Gate
from actdb.database import Database


@dataclass(frozen=True)
class Limits:
    """The server's per-request ceilings (see :func:`actdb.api.app.create_app`)."""

    sql_max_rows: int
    sql_timeout: float
    sql_max_bytes: int
    sql_memory_limit: str
    results_max_limit: int
    rows_max: int
    rows_max_bytes: int


async def get_db(request: Request) -> Database:
    """The app's open store."""
    db: Database = request.app.state.db
    return db


async def get_gate(request: Request) -> Gate:
    """The app's :class:`~actdb.api.gate.Gate` over the store."""
    gate: Gate = request.app.state.gate
    return gate


async def get_limits(request: Request) -> Limits:
    """The app's :class:`Limits`."""
    limits: Limits = request.app.state.limits
    return limits


DbDep = Annotated[Database, Depends(get_db)]
GateDep = Annotated[Gate, Depends(get_gate)]
LimitsDep = Annotated[Limits, Depends(get_limits)]

api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's API key.")


async def require_key(request: Request, given: str | None = Security(api_key_scheme)) -> None:
    """401 unless header ``X-API-Key`` is the app's key (``app.state.api_key``; None: no key)."""
    expected: bytes | None = request.app.state.api_key
    if expected is None:
        return
    if given is None or not hmac.compare_digest(given.encode(), expected):
        raise StarletteHTTPException(401, "missing or wrong API key: send header X-API-Key",
                                     headers={"WWW-Authenticate": "ApiKey"})
