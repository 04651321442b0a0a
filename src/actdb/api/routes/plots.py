"""PNG plots of comparisons: ``/v1/plot/heatmap.png`` and ``/v1/plot/trajectory.png``."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from actdb.api.routes.compare import build_comparison
from actdb.api.routes.deps import DbDep, GateDep
from actdb.api.routes.formats import ERRORS, PNG, SELECTION_PATTERN

router = APIRouter(tags=["plots"])

# matplotlib's state is process-wide and not thread-safe; plots are rare
_plot_lock = threading.Lock()

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {PNG: {"schema": {"type": "string", "format": "binary"}}}, "description": "A PNG image"},
    **ERRORS}


def png(fig: Any) -> Response:
    """``fig`` rendered as a PNG response."""
    from actdb.plots import render

    with _plot_lock:
        return Response(render(fig, "png"), media_type=PNG)


@router.get("/plot/heatmap.png", response_class=Response, responses=RESPONSES)
def plot_heatmap(db: DbDep, gate: GateDep,
                 a: str = Query("", pattern=SELECTION_PATTERN, description="Selection A (filter string)."),
                 b: str | None = Query(None, pattern=SELECTION_PATTERN, description="Selection B (default: A)."),
                 measure: str = "linear_cka", pairs: str = "all", subset: str | None = None,
                 align: str | None = None) -> Any:
    """A site x site heatmap of one measure between two selections."""
    from actdb.plots import heatmap

    result = gate.compute(build_comparison(db, a, b, measure, pairs, subset, align, {}))
    with _plot_lock:
        fig = heatmap(result, measure=measure)
    return png(fig)


@router.get("/plot/trajectory.png", response_class=Response, responses=RESPONSES)
def plot_trajectory(db: DbDep, gate: GateDep,
                    a: str = Query("", pattern=SELECTION_PATTERN,
                                   description="Selection (filter string), e.g. model=m."),
                    measure: str = "linear_cka",
                    reference: str | None = Query(None, max_length=200, description=(
                        "The checkpoint every other one is compared to (default: the model's checkpoint "
                        "named final, else its highest step); drawn at its own step.")),
                    subset: str | None = None,
                    stderr: bool = Query(False, description=(
                        "Add jackknife standard errors over 20 row shards (moments-route measures) and "
                        "shade value ± stderr around each line."))) -> Any:
    """A measure against training step, one line per layer, each checkpoint vs ``reference``."""
    from actdb.plots import trajectory

    pairs = "to_reference" if reference is None else f"to_reference:{reference}"
    plan = dataclasses.replace(build_comparison(db, a, None, measure, pairs, subset, None, {}, stderr),
                               include_reference=True)
    result = gate.compute(plan)
    with _plot_lock:
        fig = trajectory(result, measure=measure)
    return png(fig)
