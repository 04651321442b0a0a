"""The one row type of a computed comparison: one measure on one pair of reps.

:class:`CompareRow` is what :class:`~actdb.query.executor.ResultSet` holds (one per pair x
measure), what ``to_pandas``/``to_arrow`` turn into columns, and the body of each row of
``POST /v1/compare`` (the HTTP schema is built from this type). The value inside it is a
:class:`~actdb.store.records.ResultValue`, the type the executor computes, the cache stores
and stitching returns.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

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
    """The row of ``task`` (a measure of ``kind`` on one pair) with value ``v``; each side's
    columns are the fields of :meth:`~actdb.store.records.RepRecord.describe`, suffixed."""
    a, b = task.a, task.b
    return CompareRow(
        measure=task.measure, kind=kind, value=v.value, stderr=v.stderr, n=v.n,
        model_a=a.model, checkpoint_a=a.checkpoint, step_a=a.step, site_a=a.site, layer_a=a.layer,
        pooling_a=a.pooling, rep_id_a=a.id, store_a=a.store,
        model_b=b.model, checkpoint_b=b.checkpoint, step_b=b.step, site_b=b.site, layer_b=b.layer,
        pooling_b=b.pooling, rep_id_b=b.id, store_b=b.store,
        dataset=task.a.dataset, subset=task.space.subset, align=task.space.align, route=v.route, cached=cached,
        seconds=v.seconds, params=json.dumps(task.params_dict, sort_keys=True))
