"""Request and response bodies of the HTTP API (they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from actdb.query.result_row import CompareRow  # the one computed-row type; its schema is served as is

FilterValue = str | int | list[str | int]
Selection = str | dict[str, FilterValue]
ParamValue = bool | int | float | str


class ErrorOut(BaseModel):
    """Every error: a message that says what to do, and the error's type name."""

    error: str = Field(description="What went wrong and what to do next.")
    type: str = Field(description="Error class: NotFound, InvalidInput, UnsafeQuery, ReadOnly, StoreBusy, "
                                  "Unauthorized, ValidationError, ...")


class Health(BaseModel):
    """Liveness only: no key needed, so nothing about the store or the host."""

    status: Literal["ok"]


class InfoOut(BaseModel):
    """What the server serves (behind the API key, like the rest of /v1)."""

    version: str
    catalog: str = Field(description="Catalog backend: duckdb or postgresql.")
    read_only: bool


class ModelOut(BaseModel):
    id: int
    name: str
    family: str | None = None
    architecture: str | None = None
    width: int | None = None
    depth: int | None = None


class CheckpointOut(BaseModel):
    id: int
    model: str
    name: str
    step: int | None = None
    tokens_seen: int | None = None
    weights_hash: str | None = None
    duplicate_of: str | None = None


class RepOut(BaseModel):
    rep_id: int
    model: str
    checkpoint: str
    step: int | None = None
    dataset: str
    site: str
    layer: int | None = None
    pooling: str
    tokenizer: str | None = None
    n_rows: int
    dim: int
    dtype: str


class CompareRequest(BaseModel):
    """The body of ``POST /v1/compare``: the same arguments as
    ``db.reps(**a).compare(db.reps(**b), measure=..., pairs=..., subset=..., align=..., **params)``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"a": "model=pythia-70m,checkpoint=final", "b": {"model": "pythia-70m", "checkpoint": "step1000"},
         "measure": "linear_cka", "pairs": "same_layer"}]})

    a: Selection = Field(default="", description="Selection A: a filter string ('model=x,checkpoint=step*,"
                                                 "layer=2:6') or an object of filters (a list = alternatives).")
    b: Selection | None = Field(default=None, description="Selection B (default: A itself).")
    measure: str | list[str] = Field(default="linear_cka", description="One measure or several.")
    pairs: str = Field(default="all", description="all | same_layer | zip | consecutive | to_reference[:NAME]")
    subset: str | None = Field(default=None, description="SQL predicate over token/example columns.")
    align: str | None = Field(default=None, description="example:mean | example:first | example:last | word")
    params: dict[str, ParamValue] = Field(default_factory=dict, description="Measure parameters.")
    stderr: bool = Field(default=False, description="Add a jackknife standard error over 20 row shards "
                                                   "(moments-route measures only).")


class CompareOut(BaseModel):
    """The computed rows of a comparison (one per pair x measure)."""

    rows: list[CompareRow]


class ResultRow(BaseModel):
    """One row of the ``dissimilarities`` view (documented column by column in the README)."""

    result_id: int
    measure: str
    kind: str
    value: float
    stderr: float | None = None
    n: int
    model_a: str
    checkpoint_a: str
    step_a: int | None = None
    site_a: str
    layer_a: int | None = None
    pooling_a: str
    rep_a: int
    model_b: str
    checkpoint_b: str
    step_b: int | None = None
    site_b: str
    layer_b: int | None = None
    pooling_b: str
    rep_b: int
    dataset: str
    subset: str | None = None
    params: str | None = None
    extra: str | None = None
    seconds: float | None = None
    computed_at: datetime | None = None
    store_a: str | None = None
    store_b: str | None = None


class ResultsOut(BaseModel):
    rows: list[ResultRow]
    total: int = Field(description="Rows matching the filters, over all pages.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last page.")


class TokenRow(BaseModel):
    """The labels of one row of a rep (token-level reps have the token columns too)."""

    row: int
    example: int
    position: int | None = None
    token_id: int | None = None
    token: str | None = None
    char_start: int | None = Field(None, description="The token's character span in the example's text.")
    char_end: int | None = None
    special: bool | None = None
    label: str | None = None
    split: str | None = None


class TokensOut(BaseModel):
    rows: list[TokenRow]
    total: int = Field(description="Rows of the rep, over all pages.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last page.")


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "SELECT model, count(*) AS n FROM reps GROUP BY model"}]})

    query: str = Field(description="One read-only SELECT over the catalog views.")
    max_rows: int | None = Field(default=None, ge=1, description="Row limit (at most the server's).")
    timeout: float | None = Field(default=None, gt=0, description="Time limit in seconds (at most the server's).")


class SqlOut(BaseModel):
    columns: list[str]
    rows: list[dict[str, Any]]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Invalid input (bad filter, measure, SQL, ...)", 401: "Missing or wrong API key",
            403: "Not allowed (read-only server)", 404: "Not found", 413: "Too many rows or bytes for one request",
            422: "Malformed request",
            503: "Store busy"}
    return {c: {"model": ErrorOut, "description": text[c]} for c in codes}


class ProbeRequest(BaseModel):
    """The body of ``POST /v1/probe``: ``db.reps(**a).probe(label=..., method=..., folds=..., ...)``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"a": "model=pythia-70m,site=hidden.*", "label": "label", "method": "ridge", "folds": 5}]})

    a: Selection = Field(default="", description="The reps to probe: a filter string ('model=x,site=hidden.*') or "
                                                 "an object of filters (a list = alternatives).")
    label: Literal["label", "split"] = Field(default="label", description="The example column to decode.")
    method: Literal["ridge", "logistic"] = Field(default="ridge", description="ridge (streaming moments, all "
                                                 "rows) | logistic (scikit-learn on a seeded row sample).")
    folds: int = Field(default=5, ge=2, le=100, description="Cross-validation folds (of examples).")
    ridge: float = Field(default=1e-3, ge=0, le=1e6, description="ridge: penalty relative to trace(XᵀX)/d.")
    sample: int = Field(default=4096, ge=2, le=1_000_000, description="logistic: rows sampled (seeded).")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="The row sample's (and shuffled folds') seed.")
    shuffle: bool = Field(default=False, description="Seeded random folds instead of contiguous runs of examples.")
    C: float = Field(default=1.0, gt=0, le=1e6, description="logistic: inverse regularisation strength.")
    subset: str | None = Field(default=None, description="SQL predicate over token/example columns.")


class ProbeRow(BaseModel):
    """One rep's cross-validated probe."""

    rep_id: int
    model: str
    checkpoint: str
    step: int | None = None
    site: str
    layer: int | None = None
    dataset: str
    label: str
    method: str
    accuracy: float = Field(description="Held-out accuracy (argmax of the class scores), over n rows.")
    r2: float | None = Field(default=None, description="Held-out R² of the label as a number (ridge, when every "
                                                      "class name is a number); null otherwise.")
    n: int
    folds: int
    cached: bool


class ProbeOut(BaseModel):
    """One row per rep of the selection."""

    rows: list[ProbeRow]
