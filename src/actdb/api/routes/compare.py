"""Comparisons and their cached values: ``POST /v1/compare`` and ``GET /v1/results``."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from actdb.api import schemas as S
from actdb.api._params import parse_measure_params, parse_selection
from actdb.api.queries import results_page
from actdb.api.routes.deps import DbDep, GateDep, Limits
from actdb.api.routes.formats import F, json_response, table_response, tabular, wants
from actdb.database import Database


def build_comparison(db: Database, a: Any, b: Any, measure: str | list[str], pairs: str, subset: str | None,
                     align: str | None, params: dict[str, Any], stderr: bool = False) -> Any:
    """The lazy comparison ``db.reps(**a).compare(db.reps(**b), ...)`` from request values
    (selections as filter strings or objects, parameters checked against the measures)."""
    measures = [measure] if isinstance(measure, str) else list(measure)
    params = parse_measure_params(measures, params)
    sel_a = db.reps(**parse_selection(a, side="a"))
    sel_b = None if b is None else db.reps(**parse_selection(b, side="b"))
    return sel_a.compare(sel_b, measure=measures, pairs=pairs, subset=subset, align=align, stderr=stderr, **params)


def router(limits: Limits) -> APIRouter:
    """The compare and results routes under ``limits`` (``results_max_limit`` is in the
    schema: the largest results page)."""
    r = APIRouter()

    @r.post("/compare", response_model=S.CompareOut, responses=tabular(arrow=True), tags=["compare"])
    def compare(body: S.CompareRequest, request: Request, db: DbDep, gate: GateDep) -> Any:
        """Compare two selections (computed values are cached; cached ones are lookups).

        The same arguments as ``db.reps(**a).compare(db.reps(**b), ...)``. Send
        ``Accept: text/csv`` for CSV or ``Accept: application/vnd.apache.arrow.stream`` for Arrow.
        """
        fmt = wants(request)

        def make() -> tuple[Response, bool]:
            plan = build_comparison(db, body.a, body.b, body.measure, body.pairs, body.subset, body.align,
                                    body.params, body.stderr)
            result = gate.compute(plan)
            out = json_response({"rows": result.rows}) if fmt == "json" else table_response(result.to_arrow(), fmt)
            return out, all(row["cached"] for row in result.rows)  # replay only pure lookups

        return gate.remember(("compare", fmt, body.model_dump_json()), make)

    @r.get("/results", response_model=S.ResultsOut, responses=tabular(), tags=["results"])
    def results(request: Request, db: DbDep, gate: GateDep,
                measure: str | None = Query(None, description="Measure name(s), a|b."),
                kind: str | None = Query(None, description="similarity | distance"),
                model_a: str | None = F(), checkpoint_a: str | None = F(), site_a: str | None = F(),
                layer_a: str | None = F(), step_a: str | None = F(), pooling_a: str | None = F(),
                model_b: str | None = F(), checkpoint_b: str | None = F(), site_b: str | None = F(),
                layer_b: str | None = F(), step_b: str | None = F(), pooling_b: str | None = F(),
                dataset: str | None = F(), rep_a: str | None = F(), rep_b: str | None = F(),
                limit: int = Query(1000, ge=1, le=limits.results_max_limit),
                offset: int = Query(0, ge=0, le=2**62),
                format: Literal["json", "csv"] | None = Query(
                    None, description="Override the Accept header."),
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

        key = ("results", fmt, limit, offset, tuple(sorted((k, v) for k, v in filters.items() if v)))
        return gate.remember(key, make)

    return r
