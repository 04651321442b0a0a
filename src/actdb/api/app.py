"""The FastAPI app: thin routes over the library, errors as JSON, an optional API key.

Every route that touches the store is a plain ``def``, so FastAPI runs it in its thread
pool; the event loop never blocks on the catalog, an array or a computation. Sharing the
store between those threads is the job of :class:`actdb.api.gate.Gate`.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import logging
import math
import threading
from collections.abc import AsyncIterator
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi import Path as Path_
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import actdb
from actdb import errors as E
from actdb._version import __version__
from actdb.api import schemas as S
from actdb.api._params import parse_measure_params, parse_selection
from actdb.api.gate import Gate
from actdb.api.queries import results_page
from actdb.api.rows import TooLarge

log = logging.getLogger("actdb.api")

CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
PNG = "image/png"
ERRORS = S.error_responses(400, 401, 403, 404, 422, 503)
ROWS_ERRORS = S.error_responses(400, 401, 403, 404, 413, 422, 503)

# most specific first: the first matching class decides the status
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (E.NotFound, 404), (E.NotAStore, 404), (E.ReadOnly, 403), (E.StoreBusy, 503), (E.AlreadyExists, 409),
    (E.MeasureError, 422), (TooLarge, 413), (E.InvalidInput, 400), (E.CorruptStore, 500), (E.StoreTooNew, 500), (E.ActdbError, 400),
)


def status_of(exc: BaseException) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "type": kind}, status_code=status, headers=headers)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):  # the catalog stores naive UTC: say so (RFC 3339)
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
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
    body = json.dumps(_plain(payload), separators=(",", ":"), default=str, allow_nan=False)
    return Response(body, media_type="application/json")


def table_response(table: pa.Table, fmt: str, *, headers: dict[str, str] | None = None) -> Response:
    if fmt == "csv":
        import pyarrow.csv as pcsv

        from actdb.query.sqllimits import csv_compatible

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


FILTER_PATTERN = r"^[A-Za-z0-9_.\-*?\[\]/|:]+$"  # a filter value: names, globs, a|b lists, a:b ranges
SELECTION_PATTERN = r"^[A-Za-z0-9_.\-*?\[\]/|:=,]*$"  # a filter string: key=value,key=value


def F(description: str = "Names, globs (*, ?), a|b alternatives; a:b ranges for numbers.") -> Any:  # noqa: N802
    """A filter query parameter (the selection filter syntax)."""
    return Query(None, max_length=200, pattern=FILTER_PATTERN, description=description)


def _tabular(*, json_model: type[Any] | None = None, arrow: bool = False) -> dict[int | str, dict[str, Any]]:
    content: dict[str, Any] = {CSV: {"schema": {"type": "string"}}}
    if arrow:
        content[ARROW] = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"content": content, "description": "JSON (default), CSV or Arrow IPC by the Accept header"},
            **ERRORS}


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
    gate = Gate(db, max_values=compare_max_values)
    plot_lock = threading.Lock()  # matplotlib is not thread-safe; plots are rare

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(gate.open)
        try:
            yield
        finally:
            await run_in_threadpool(gate.close)
            if owned:
                db.close()

    app = FastAPI(title="actdb", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,  # served below, behind the API key unless public_docs
                  description="Activation database: compare stored representations of language models. "
                              "Errors are JSON {error, type}. Blocking work runs in a thread pool.")
    app.state.gate = gate
    app.state.db = db
    from actdb.api.json_body import JsonBody

    app.add_middleware(JsonBody)  # `curl -d '{...}'` (form content type) with a JSON body is JSON

    # ------------------------------------------------------------- errors
    @app.exception_handler(E.ActdbError)
    async def _actdb_error(request: Request, exc: E.ActdbError) -> JSONResponse:
        code = status_of(exc)
        if code >= 500:
            log.error("store error on %s: %s", request.url.path, exc)
        for_face = getattr(exc, "for_face", None)  # a fix worded for HTTP (field, not Python keyword)
        return _error(code, str(for_face("http")) if callable(for_face) else str(exc), type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg')}")
        return _error(422, "malformed request: " + "; ".join(parts), "ValidationError")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "HTTPError", getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); this is a bug in actdb, please report it",
                      "InternalError")

    # --------------------------------------------------------------- auth
    scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's API key.")
    expected = api_key.encode() if api_key else None

    def require_key(given: str | None = Security(scheme)) -> None:
        if expected is None:
            return
        if given is None or not hmac.compare_digest(given.encode(), expected):
            raise StarletteHTTPException(401, "missing or wrong API key: send header X-API-Key",
                                         headers={"WWW-Authenticate": "ApiKey"})

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)] if expected else [])
    docs_auth = [Depends(require_key)] if expected and not public_docs else []

    @app.get("/openapi.json", include_in_schema=False, dependencies=docs_auth)
    def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=docs_auth)
    def swagger_docs() -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="actdb - API docs")

    @app.get("/redoc", include_in_schema=False, dependencies=docs_auth)
    def redoc_docs() -> Response:
        from fastapi.openapi.docs import get_redoc_html

        return get_redoc_html(openapi_url="/openapi.json", title="actdb - API docs")

    @app.get("/healthz", response_model=S.Health, tags=["meta"])
    def healthz() -> Any:
        """Liveness: no API key needed, touches nothing and tells nothing about the store."""
        return {"status": "ok"}

    @v1.get("/info", response_model=S.InfoOut, responses=ERRORS, tags=["meta"])
    def info() -> Any:
        """The server's actdb version, catalog backend and whether it is read-only."""
        return {"version": __version__, "catalog": db.catalog.dialect, "read_only": bool(db.read_only)}

    # ------------------------------------------------------------ catalog
    @v1.get("/models", response_model=list[S.ModelOut], responses=ERRORS, tags=["catalog"])
    def models() -> Any:
        """Every model in the store."""
        with gate.shared():
            return json_response([vars(m) for m in db.models()])

    @v1.get("/checkpoints", response_model=list[S.CheckpointOut], responses=ERRORS, tags=["catalog"])
    def checkpoints(model: str | None = Query(None, max_length=200, description="Only this model's.")) -> Any:
        """Checkpoints, ordered by model and step."""
        with gate.shared():
            return json_response([vars(c) for c in db.checkpoints(model)])

    @v1.get("/reps", response_model=list[S.RepOut], responses=ERRORS, tags=["catalog"])
    def reps(model: str | None = F(), checkpoint: str | None = F(), site: str | None = F(),
             layer: str | None = F("A number, a|b list or a:b range."), step: str | None = F(),
             dataset: str | None = F(), pooling: str | None = F(), tokenizer: str | None = F(),
             family: str | None = F(), architecture: str | None = F(), rep_id: str | None = F()) -> Any:
        """Complete reps matching the filters (globs like ``step*``, ``a|b`` lists, ``a:b`` ranges)."""
        given = {k: v for k, v in dict(model=model, checkpoint=checkpoint, site=site, layer=layer, step=step,
                                        dataset=dataset, pooling=pooling, tokenizer=tokenizer, family=family,
                                        architecture=architecture, rep_id=rep_id).items() if v is not None}
        filters = parse_selection({k: v.split("|") for k, v in given.items()}, side="reps")
        with gate.shared():
            out = [{"rep_id": r.rep_id, "model": r.model, "checkpoint": r.checkpoint, "step": r.step,
                    "dataset": r.dataset, "site": r.site, "layer": r.layer, "pooling": r.pooling,
                    "tokenizer": r.tokenizer, "n_rows": r.n_rows, "dim": r.dim, "dtype": r.dtype}
                   for r in db.reps(**filters)]
        return json_response(out)

    @v1.get("/reps/{rep_id}/rows", response_class=Response, tags=["catalog"], responses={
        200: {"content": {ARROW: {"schema": {"type": "string", "format": "binary"}}},
              "description": "Arrow IPC stream: columns row (int64) and values (fixed-size list of dim floats)"},
        **ROWS_ERRORS})
    def rep_rows(rep_id: int = Path_(ge=0, le=2**62, description="The rep's id (GET /v1/reps)."),
                 start: int = Query(0, ge=0, le=2**62, description="First row (0-based)."),
                 stop: int | None = Query(None, ge=0, le=2**62, description="One past the last row (default: "
                                                                             "the end).")) -> Any:
        """Rows ``start:stop`` of a rep's values as an Arrow IPC stream: a ``row`` column and a
        ``values`` column of fixed-size lists (``dim`` floats, float16 or float32 as stored);
        schema metadata ``actdb.*`` names the rep. At most ``rows_max`` rows and
        ``rows_max_bytes`` bytes a request (413 beyond, with a range that fits): page with ``start``.
        """
        from actdb.api.rows import find_rep, rows_ipc

        with gate.shared():
            body = rows_ipc(find_rep(db, rep_id), start, stop, max_rows=rows_max, max_bytes=rows_max_bytes)
        return Response(body, media_type=ARROW)

    @v1.get("/reps/{rep_id}/tokens", response_model=S.TokensOut, tags=["catalog"],
            responses=_tabular(arrow=True) | {413: ROWS_ERRORS[413]})
    def rep_tokens(request: Request,
                   rep_id: int = Path_(ge=0, le=2**62, description="The rep's id (GET /v1/reps)."),
                   limit: int = Query(min(1000, rows_max), ge=1, le=rows_max),
                   offset: int = Query(0, ge=0, le=2**62),
                   format: Literal["json", "csv", "arrow"] | None = Query(
                       None, description="Override the Accept header.")) -> Any:
        """The labels of a rep's rows, paginated: row, example, and for token-level reps
        position, token_id, token, char_start, char_end, special; the example's label and split.
        JSON (default), CSV or Arrow; the total in ``total`` (JSON) or header ``X-Total-Count``."""
        from actdb.api.rows import find_rep, tokens_page

        fmt = wants(request, format)
        with gate.shared():
            table, total = tokens_page(find_rep(db, rep_id), offset, limit)
        if fmt == "json":
            nxt = offset + table.num_rows if offset + table.num_rows < total else None
            return json_response({"rows": table.to_pylist(), "total": total, "limit": limit, "offset": offset,
                                  "next_offset": nxt})
        return table_response(table, fmt, headers={"X-Total-Count": str(total)})

    # ------------------------------------------------------------ compare
    def comparison(a: Any, b: Any, measure: str | list[str], pairs: str, subset: str | None,
                   align: str | None, params: dict[str, Any], stderr: bool = False) -> Any:
        measures = [measure] if isinstance(measure, str) else list(measure)
        params = parse_measure_params(measures, params)
        sel_a = db.reps(**parse_selection(a, side="a"))
        sel_b = None if b is None else db.reps(**parse_selection(b, side="b"))
        return sel_a.compare(sel_b, measure=measures, pairs=pairs, subset=subset, align=align, stderr=stderr,
                             **params)

    @v1.post("/compare", response_model=S.CompareOut, responses=_tabular(arrow=True), tags=["compare"])
    def compare(body: S.CompareRequest, request: Request) -> Any:
        """Compare two selections (computed values are cached; cached ones are lookups).

        The same arguments as ``db.reps(**a).compare(db.reps(**b), ...)``. Send
        ``Accept: text/csv`` for CSV or ``Accept: application/vnd.apache.arrow.stream`` for Arrow.
        """
        fmt = wants(request)

        def make() -> tuple[Response, bool]:
            plan = comparison(body.a, body.b, body.measure, body.pairs, body.subset, body.align, body.params,
                              body.stderr)
            result = gate.compute(plan)
            out = json_response({"rows": result.rows}) if fmt == "json" else table_response(result.to_arrow(), fmt)
            return out, all(r["cached"] for r in result.rows)  # replay only pure lookups

        return gate.remember(("compare", fmt, body.model_dump_json()), make)

    # ------------------------------------------------------------ results
    @v1.get("/results", response_model=S.ResultsOut, responses=_tabular(), tags=["results"])
    def results(request: Request,
                measure: str | None = Query(None, description="Measure name(s), a|b."),
                kind: str | None = Query(None, description="similarity | distance"),
                model_a: str | None = F(), checkpoint_a: str | None = F(), site_a: str | None = F(),
                layer_a: str | None = F(), step_a: str | None = F(), pooling_a: str | None = F(),
                model_b: str | None = F(), checkpoint_b: str | None = F(), site_b: str | None = F(),
                layer_b: str | None = F(), step_b: str | None = F(), pooling_b: str | None = F(),
                dataset: str | None = F(), rep_a: str | None = F(), rep_b: str | None = F(),
                limit: int = Query(1000, ge=1, le=results_max_limit),
                offset: int = Query(0, ge=0, le=2**62),
                format: Literal["json", "csv"] | None = Query(None, description="Override the Accept header."),
                ) -> Any:
        """Cached results (the ``dissimilarities`` view), filtered and paginated.

        For BI tools: ``GET /v1/results?format=csv&measure=linear_cka`` returns CSV with the
        total in header ``X-Total-Count``.
        """
        filters = dict(measure=measure, kind=kind, model_a=model_a, checkpoint_a=checkpoint_a, site_a=site_a,
                       layer_a=layer_a, step_a=step_a, pooling_a=pooling_a, model_b=model_b,
                       checkpoint_b=checkpoint_b, site_b=site_b, layer_b=layer_b, step_b=step_b,
                       pooling_b=pooling_b, dataset=dataset, rep_a=rep_a, rep_b=rep_b)
        fmt = wants(request, format)

        def make() -> tuple[Response, bool]:
            with gate.shared():
                rows, total = results_page(db, filters, limit=limit, offset=offset)
            nxt = offset + len(rows) if offset + len(rows) < total else None
            if fmt == "json":
                return json_response({"rows": rows, "total": total, "limit": limit, "offset": offset,
                                      "next_offset": nxt}), True
            names = list(S.ResultRow.model_fields)
            table = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.string()) for c in names})
            return table_response(table, "csv" if fmt == "csv" else "arrow",
                                  headers={"X-Total-Count": str(total)}), True

        return gate.remember(("results", fmt, limit, offset, tuple(sorted((k, v) for k, v in filters.items() if v))),
                             make)

    # ---------------------------------------------------------------- sql
    @v1.post("/sql", response_model=S.SqlOut, responses=_tabular(), tags=["sql"])
    def sql(body: S.SqlRequest, request: Request) -> Any:
        """One read-only SELECT over the catalog views, within the server's row and time limits.

        More rows than the limit is an error (400), not a silent cut; so is a query running
        past the time limit. ``Accept: text/csv`` for CSV.
        """
        max_rows = min(body.max_rows or sql_max_rows, sql_max_rows)
        timeout = min(body.timeout or sql_timeout, sql_timeout)
        table = gate.exclusive(lambda store: store.sql(body.query, max_rows=max_rows, timeout=timeout,
                                                       max_bytes=sql_max_bytes, memory_limit=sql_memory_limit))
        if wants(request) == "csv":
            return table_response(table, "csv")
        return json_response({"columns": table.column_names, "rows": table.to_pylist()})

    # -------------------------------------------------------------- plots
    def png(fig: Any) -> Response:
        from actdb.plots import render

        with plot_lock:
            return Response(render(fig, "png"), media_type=PNG)

    plot_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {PNG: {"schema": {"type": "string", "format": "binary"}}}, "description": "A PNG image"},
        **ERRORS}

    @v1.get("/plot/heatmap.png", response_class=Response, responses=plot_responses, tags=["plots"])
    def plot_heatmap(a: str = Query("", pattern=SELECTION_PATTERN, description="Selection A (filter string)."),
                     b: str | None = Query(None, pattern=SELECTION_PATTERN, description="Selection B (default: A)."),
                     measure: str = "linear_cka", pairs: str = "all", subset: str | None = None,
                     align: str | None = None) -> Any:
        """A site x site heatmap of one measure between two selections."""
        from actdb.plots import heatmap

        result = gate.compute(comparison(a, b, measure, pairs, subset, align, {}))
        with plot_lock:
            fig = heatmap(result, measure=measure)
        return png(fig)

    @v1.get("/plot/trajectory.png", response_class=Response, responses=plot_responses, tags=["plots"])
    def plot_trajectory(a: str = Query("", pattern=SELECTION_PATTERN,
                                       description="Selection (filter string), e.g. model=m."),
                        measure: str = "linear_cka",
                        reference: str | None = Query(None, max_length=200, description=(
                            "The checkpoint every other one is compared to (default: the model's checkpoint "
                            "named final, else its highest step); drawn at its own step.")),
                        subset: str | None = None) -> Any:
        """A measure against training step, one line per layer, each checkpoint vs ``reference``."""
        import dataclasses

        from actdb.plots import trajectory

        pairs = "to_reference" if reference is None else f"to_reference:{reference}"
        plan = dataclasses.replace(comparison(a, None, measure, pairs, subset, None, {}), include_reference=True)
        result = gate.compute(plan)
        with plot_lock:
            fig = trajectory(result, measure=measure)
        return png(fig)

    app.include_router(v1)
    return app
