"""Listing what the store holds: ``/v1/models``, ``/v1/checkpoints``, ``/v1/reps``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from actdb.api import schemas as S
from actdb.api._params import parse_selection
from actdb.api.routes.deps import DbDep, GateDep
from actdb.api.routes.formats import ERRORS, F, json_response

router = APIRouter(tags=["catalog"])


@router.get("/models", response_model=list[S.ModelOut], responses=ERRORS)
def models(db: DbDep, gate: GateDep) -> Any:
    """Every model in the store."""
    with gate.shared():
        return json_response([vars(m) for m in db.models()])


@router.get("/checkpoints", response_model=list[S.CheckpointOut], responses=ERRORS)
def checkpoints(db: DbDep, gate: GateDep,
                model: str | None = Query(None, max_length=200, description="Only this model's.")) -> Any:
    """Checkpoints, ordered by model and step."""
    with gate.shared():
        return json_response([vars(c) for c in db.checkpoints(model)])


@router.get("/reps", response_model=list[S.RepOut], responses=ERRORS)
def reps(db: DbDep, gate: GateDep, model: str | None = F(), checkpoint: str | None = F(), site: str | None = F(),
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
