"""The one row type of a computed comparison: one measure on one pair of reps.

:class:`CompareRow` is what :class:`~actdb.query.executor.ResultSet` holds (one per pair x
measure), what ``to_pandas``/``to_arrow`` turn into columns, and the body of each row of
``POST /v1/compare`` (the HTTP schema is built from this type). The value inside it is a
:class:`~actdb.store.records.ResultValue`, the type the executor computes, the cache stores
and stitching returns.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from typing_extensions import TypedDict

if TYPE_CHECKING:
    from actdb.query.tasks import Task
    from actdb.store.records import ResultValue


class CompareRow(TypedDict):
    """One computed value with both reps described (``_a``/``_b`` columns)."""

    measure: str
    kind: str
    value: float
    stderr: float | None
    n: int
    model_a: str
    checkpoint_a: str
    step_a: int | None
    site_a: str
    layer_a: int | None
    pooling_a: str
    rep_id_a: int
    store_a: str
    model_b: str
    checkpoint_b: str
    step_b: int | None
    site_b: str
    layer_b: int | None
    pooling_b: str
    rep_id_b: int
    store_b: str
    dataset: str
    subset: str | None
    align: str | None
    route: str
    cached: bool
    seconds: float
    params: str


def compare_row(task: Task, kind: str, v: ResultValue, cached: bool) -> CompareRow:
    """The row of ``task`` (a measure of ``kind`` on one pair) with value ``v``."""
    sides: dict[str, Any] = {}
    for side, rep in (("a", task.a), ("b", task.b)):
        for k, val in rep.describe().items():
            sides[f"{k}_{side}"] = val
    return CompareRow(
        measure=task.measure, kind=kind, value=v.value, stderr=v.stderr, n=v.n, **sides,
        dataset=task.a.dataset, subset=task.space.subset, align=task.space.align, route=v.route, cached=cached,
        seconds=v.seconds, params=json.dumps(task.params_dict, sort_keys=True))
