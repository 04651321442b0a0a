"""Linear probes over HTTP: ``POST /v1/probe`` (``Selection.probe``)."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import Response

from actdb.api import schemas as S
from actdb.api._params import parse_selection
from actdb.api.routes.deps import DbDep, GateDep
from actdb.api.routes.formats import json_response, table_response, tabular, wants
from actdb.errors import InvalidInput


def _records(frame: Any) -> list[dict[str, Any]]:
    """The probe DataFrame as JSON-ready rows (missing step/layer as null)."""
    rows = []
    for row in frame.to_dict("records"):
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for k in ("rep_id", "step", "layer", "n", "folds"):
            value = clean[k]
            clean[k] = None if value is None else int(value)
        clean["cached"] = bool(clean["cached"])
        rows.append(clean)
    return rows


def router() -> APIRouter:
    """The probe route: probes of at most the gate's ``max_values`` reps per request."""
    r = APIRouter()

    @r.post("/probe", response_model=S.ProbeOut, responses=tabular(arrow=True), tags=["compare"])
    def probe(body: S.ProbeRequest, request: Request, db: DbDep, gate: GateDep) -> Any:
        """Cross-validated linear probes of an example column, one per rep (computed ones are cached).

        The same arguments as ``db.reps(**a).probe(label=..., method=..., folds=...)``; the cached
        values are the ``probes`` view. Send ``Accept: text/csv`` for CSV or
        ``Accept: application/vnd.apache.arrow.stream`` for Arrow.
        """
        fmt = wants(request)

        def make() -> tuple[Response, bool]:
            sel = db.reps(**parse_selection(body.a, side="a"))
            # computed values are written to the catalog: one writer at a time, as compare's (Gate.compute)
            with gate.writing():
                count = len(sel)
                if count > gate.max_values:
                    raise InvalidInput(f"the selection has {count:,} reps; this server probes at most "
                                       f"{gate.max_values:,} per request: narrow it")
                frame = sel.probe(label=body.label, method=body.method, folds=body.folds, ridge=body.ridge,
                                  sample=body.sample, seed=body.seed, shuffle=body.shuffle, C=body.C,
                                  subset=body.subset)
            rows = _records(frame)
            if not all(row["cached"] for row in rows):
                gate.bump()
            out = json_response({"rows": rows}) if fmt == "json" else table_response(pa.Table.from_pylist(rows), fmt)
            return out, all(row["cached"] for row in rows)  # replay only pure lookups

        return gate.remember(("probe", fmt, body.model_dump_json()), make)

    return r
