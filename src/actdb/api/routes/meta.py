"""Routes about the server itself: ``/healthz``, ``/v1/info`` and the API docs.

Three routers, because each is included with its own auth rule: ``health`` never needs
the key, ``docs`` needs it unless the docs are public, ``router`` (under ``/v1``) always
does when the server has a key.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from actdb._version import __version__
from actdb.api import schemas as S
from actdb.api.routes.deps import DbDep
from actdb.api.routes.formats import ERRORS
from actdb.database import Database

health = APIRouter()
docs = APIRouter()
router = APIRouter()


def catalog_backend(db: Database) -> str:
    """The name of the store's catalog backend (duckdb, postgresql), read from its URL."""
    return sa.engine.make_url(db.catalog_url).get_backend_name()


@docs.get("/openapi.json", include_in_schema=False)
def openapi_schema(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs.get("/docs", include_in_schema=False)
def swagger_docs() -> Response:
    from fastapi.openapi.docs import get_swagger_ui_html

    return get_swagger_ui_html(openapi_url="/openapi.json", title="actdb - API docs")


@docs.get("/redoc", include_in_schema=False)
def redoc_docs() -> Response:
    from fastapi.openapi.docs import get_redoc_html

    return get_redoc_html(openapi_url="/openapi.json", title="actdb - API docs")


@health.get("/healthz", response_model=S.Health, tags=["meta"])
def healthz() -> Any:
    """Liveness: no API key needed, touches nothing and tells nothing about the store."""
    return {"status": "ok"}


@router.get("/info", response_model=S.InfoOut, responses=ERRORS, tags=["meta"])
def info(db: DbDep) -> Any:
    """The server's actdb version, catalog backend and whether it is read-only."""
    return {"version": __version__, "catalog": catalog_backend(db), "read_only": bool(db.read_only)}
