"""The FastAPI app factory: the store, errors as JSON, an optional API key, the routers.

The routes live in :mod:`actdb.api.routes`, one router per area. Every route that touches
the store is a plain ``def``, so FastAPI runs it in its thread pool; the event loop never
blocks on the catalog, an array or a computation. Sharing the store between those threads
is the job of :class:`actdb.api.gate.Gate`; a route gets the store, the gate and the limits
from ``app.state`` through the dependencies of :mod:`actdb.api.routes.deps`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import actdb
from actdb import errors as E
from actdb._version import __version__
from actdb.api.gate import Gate
from actdb.api.json_body import JsonBody
from actdb.api.routes import catalog, compare, meta, plots, probe, rows, sql
from actdb.api.routes.deps import Limits, require_key
from actdb.api.routes.rows import TooLarge

log = logging.getLogger("actdb.api")

# most specific first: the first matching class decides the status
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (E.NotFound, 404), (E.NotAStore, 404), (E.ReadOnly, 403), (E.StoreBusy, 503), (E.AlreadyExists, 409),
    (E.MeasureError, 422), (TooLarge, 413), (E.InvalidInput, 400), (E.CorruptStore, 500), (E.StoreTooNew, 500),
    (E.ActdbError, 400),
)


def status_of(exc: BaseException) -> int:
    """The HTTP status of an error (:data:`STATUS`; 500 for anything else)."""
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "type": kind}, status_code=status, headers=headers)


async def _actdb_error(request: Request, exc: E.ActdbError) -> JSONResponse:
    code = status_of(exc)
    if code >= 500:
        log.error("store error on %s: %s", request.url.path, exc)
    for_face = getattr(exc, "for_face", None)  # a fix worded for HTTP (field, not Python keyword)
    return _error(code, str(for_face("http")) if callable(for_face) else str(exc), type(exc).__name__)


async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg')}")
    return _error(422, "malformed request: " + "; ".join(parts), "ValidationError")


async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail), "HTTPError", getattr(exc, "headers", None))


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s", request.url.path)
    return _error(500, f"internal error ({type(exc).__name__}); this is a bug in actdb, please report it",
                  "InternalError")


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    gate: Gate = app.state.gate
    await run_in_threadpool(gate.open)
    try:
        yield
    finally:
        await run_in_threadpool(gate.close)
        if app.state.owns_db:
            app.state.db.close()


def create_app(store: str | Path | actdb.Database, *, api_key: str | None = None, read_only: bool = False,
               sql_max_rows: int = 10_000, sql_timeout: float = 10.0, sql_max_bytes: int = 64 * 2**20,
               sql_memory_limit: str = "1GB", compare_max_values: int = 20_000,
               results_max_limit: int = 10_000, public_docs: bool = False, rows_max: int = 100_000,
               rows_max_bytes: int = 64 * 2**20) -> FastAPI:
    """The actdb HTTP API over one store.

    ``store``: a path (opened here, closed at shutdown) or an open :class:`Database`.
    ``api_key``: when set, every route but ``/healthz`` needs header ``X-API-Key: KEY`` —
    the API docs (``/docs``, ``/redoc``, ``/openapi.json``) too, unless ``public_docs``.
    ``/healthz`` says only ``{"status": "ok"}``; ``/v1/info`` tells version and backend.
    ``read_only``: open the store read-only (comparisons still compute, but nothing is cached).
    ``sql_max_rows`` / ``sql_timeout``: the ceilings of ``POST /v1/sql`` (a request may ask
    for less); ``sql_max_bytes`` / ``sql_memory_limit``: the result size and engine memory
    one SQL request may use. ``compare_max_values``: the most (pair, measure) values one compare request
    may ask for. ``rows_max`` / ``rows_max_bytes``: the most rows and bytes one
    ``GET /v1/reps/{id}/rows`` sends (a bigger range is refused with 413 naming one that fits).
    """
    if isinstance(store, actdb.Database):
        db, owned = store, False
    else:
        db, owned = actdb.open(str(store), read_only=read_only), True
    if api_key is not None and not api_key.strip():
        raise E.InvalidInput("the API key is empty; give a non-empty key, or api_key=None to serve without one")
    limits = Limits(sql_max_rows=sql_max_rows, sql_timeout=sql_timeout, sql_max_bytes=sql_max_bytes,
                    sql_memory_limit=sql_memory_limit, results_max_limit=results_max_limit, rows_max=rows_max,
                    rows_max_bytes=rows_max_bytes)

    app = FastAPI(title="actdb", version=__version__, lifespan=_lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,  # served by routes.meta.docs, behind the API key unless public_docs
                  description="Activation database: compare stored representations of language models. "
                              "Errors are JSON {error, type}. Blocking work runs in a thread pool.")
    app.state.db = db
    app.state.owns_db = owned
    app.state.gate = Gate(db, max_values=compare_max_values)
    app.state.limits = limits
    app.state.api_key = api_key.encode() if api_key else None

    app.add_middleware(JsonBody)  # `curl -d '{...}'` (form content type) with a JSON body is JSON
    app.exception_handler(E.ActdbError)(_actdb_error)
    app.exception_handler(RequestValidationError)(_validation)
    app.exception_handler(StarletteHTTPException)(_http)
    app.exception_handler(Exception)(_bug)

    auth: list[Any] = [Depends(require_key)] if api_key else []
    app.include_router(meta.docs, dependencies=[] if public_docs else auth)
    app.include_router(meta.health)
    for router in (meta.router, catalog.router, rows.router(limits), compare.router(limits), sql.router,
                   plots.router, probe.router()):
        app.include_router(router, prefix="/v1", dependencies=auth)
    return app
