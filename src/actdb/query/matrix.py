"""Comparison results as matrices: rep x rep tables, labelled arrays and pivots.

A computed comparison is long-form (one row per pair x measure); a heatmap wants a
matrix. :func:`matrix_frame` lays one measure out as rows = A-side reps, columns = B-side
reps; when the two sides share reps (a selection compared with itself) both axes are
the union of them, so the matrix is square. A missing cell whose mirror ``(b, a)`` was
computed takes the mirror's value when the measure is symmetric (``m(X, Y) == m(Y, X)``;
``linear_regression`` is not, and its missing mirrors stay NaN). Axis labels are layer
numbers when each side's reps differ only by layer (sites ``hidden.L``; e.g. one
checkpoint's layers against another's), else rep labels
``model/checkpoint/site`` (``[pooling]`` when not token-level, ``store:`` prefix when attached).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from actdb.errors import InvalidInput

_IDENTITY = ("store", "model", "checkpoint", "step", "site", "layer", "pooling", "rep_id")
#: A computed row: :class:`~actdb.query.result_row.CompareRow`, or the same keys as a plain dict.
Row = TypeVar("Row", bound=Mapping[str, Any])


def pick_measure(rows: Sequence[Row], measure: str | None) -> tuple[str, list[Row]]:
    """The rows of one measure (``measure``, or the only one the rows hold)."""
    if not rows:
        raise InvalidInput("the results are empty: nothing to lay out (check the selections' filters)")
    measures = list(dict.fromkeys(r["measure"] for r in rows))
    if measure is None:
        if len(measures) > 1:
            raise InvalidInput(f"the results hold {len(measures)} measures ({', '.join(measures)}); "
                               "name one with measure=...")
        measure = measures[0]
    picked = [r for r in rows if r["measure"] == measure]
    if not picked:
        raise InvalidInput(f"no results for measure {measure!r}; the results hold {', '.join(measures)}")
    return measure, picked


def _side(row: Mapping[str, Any], side: str) -> dict[str, Any]:
    return {k: row.get(f"{k}_{side}") for k in _IDENTITY}


def _order(ident: dict[str, Any]) -> tuple[Any, ...]:
    def nulls_last(v: Any) -> tuple[bool, Any]:
        return (v is None, v if v is not None else 0)

    return (str(ident["store"] or "local") != "local", str(ident["store"]), str(ident["model"]),
            nulls_last(ident["step"]), str(ident["checkpoint"]), nulls_last(ident["layer"]), str(ident["site"]),
            str(ident["pooling"]), nulls_last(ident["rep_id"]))


def _layered(idents: list[dict[str, Any]]) -> bool:
    """Whether the reps differ only by layer (sites ``hidden.L``, one rep a layer)."""
    varying = any(len({str(i[k]) for i in idents}) > 1 for k in ("store", "model", "checkpoint", "pooling"))
    return (not varying and all(i["layer"] is not None and i["site"] == f"hidden.{i['layer']}" for i in idents)
            and len({i["layer"] for i in idents}) == len(idents))


def _named(idents: list[dict[str, Any]]) -> list[str]:
    """RepRecord labels ``[store:]model/checkpoint/site[pooling]`` (``#rep_id`` added when two coincide)."""
    out = []
    for i in idents:
        where = "" if (i["store"] or "local") == "local" else f"{i['store']}:"
        pooled = "" if i["pooling"] in (None, "token") else f"[{i['pooling']}]"
        out.append(f"{where}{i['model']}/{i['checkpoint']}/{i['site']}{pooled}")
    if len(set(out)) < len(out):  # same names from different datasets or tokenizers: tell them apart by id
        out = [f"{label}#{i['rep_id']}" for label, i in zip(out, idents)]
    return out


def layout(rows: Sequence[Mapping[str, Any]], measure: str | None = None) -> dict[str, Any]:
    """The matrix of one measure: ``values`` (len(a), len(b)) float64 (NaN where neither the
    pair nor, for a symmetric measure, its mirror was computed), ``a``/``b`` labels,
    ``a_reps``/``b_reps`` (each rep's identity), ``measure``, ``kind``, ``layered``."""
    from actdb.query.measures import get_measure

    measure, picked = pick_measure(rows, measure)
    a_side: dict[tuple[Any, Any], dict[str, Any]] = {}
    b_side: dict[tuple[Any, Any], dict[str, Any]] = {}
    cells: dict[tuple[tuple[Any, Any], tuple[Any, Any]], float] = {}
    for r in picked:
        ia, ib = _side(r, "a"), _side(r, "b")
        ka, kb = (ia["store"], ia["rep_id"]), (ib["store"], ib["rep_id"])
        a_side.setdefault(ka, ia)
        b_side.setdefault(kb, ib)
        value = float("nan") if r["value"] is None else float(r["value"])
        old = cells.get((ka, kb))
        if old is not None and not (old == value or (np.isnan(old) and np.isnan(value))):
            raise InvalidInput(
                f"the results hold two values of {measure} for {r.get('model_a')}/{r.get('checkpoint_a')}/"
                f"{r.get('site_a')} vs {r.get('model_b')}/{r.get('checkpoint_b')}/{r.get('site_b')} ({old} and "
                f"{value}): they differ in dataset, subset, align or params; compare those separately")
        cells[(ka, kb)] = value
    if set(a_side) & set(b_side):  # a selection against itself (or overlapping ones): one square
        both = {**a_side, **b_side}
        a_side = b_side = both
    a_keys = sorted(a_side, key=lambda k: _order(a_side[k]))
    b_keys = sorted(b_side, key=lambda k: _order(b_side[k]))
    ai, bi = {k: i for i, k in enumerate(a_keys)}, {k: j for j, k in enumerate(b_keys)}
    values = np.full((len(a_keys), len(b_keys)), np.nan)
    for (ka, kb), v in cells.items():
        values[ai[ka], bi[kb]] = v
    spec = get_measure(measure)
    if spec.symmetric:
        for (ka, kb), v in cells.items():
            if kb in ai and ka in bi and (kb, ka) not in cells:
                values[ai[kb], bi[ka]] = v
    a_reps, b_reps = [a_side[k] for k in a_keys], [b_side[k] for k in b_keys]
    layered = _layered(a_reps) and _layered(b_reps)  # e.g. step100's layers x final's layers
    if layered:
        a_labels: list[Any] = [int(i["layer"]) for i in a_reps]
        b_labels: list[Any] = [int(i["layer"]) for i in b_reps]
    else:
        a_labels, b_labels = _named(a_reps), _named(b_reps)
    return {"values": values, "a": a_labels, "b": b_labels, "a_reps": a_reps, "b_reps": b_reps,
            "measure": measure, "kind": spec.kind, "layered": layered}


def matrix_frame(rows: Sequence[Mapping[str, Any]], measure: str | None = None) -> Any:
    """A pandas DataFrame: index ``a`` (A-side reps), columns ``b`` (B-side reps)."""
    import pandas as pd

    m = layout(rows, measure)
    name_a, name_b = ("layer_a", "layer_b") if m["layered"] else ("a", "b")
    frame = pd.DataFrame(m["values"], index=pd.Index(m["a"], name=name_a), columns=pd.Index(m["b"], name=name_b))
    frame.attrs.update(measure=m["measure"], kind=m["kind"])
    return frame


def matrix_xarray(rows: Sequence[Mapping[str, Any]], measure: str | None = None) -> Any:
    """An ``xarray.DataArray`` with dims ``(a, b)``: the matrix, labelled by rep (layer numbers
    or rep labels), each rep's model, checkpoint, step, site, layer, pooling and rep_id as
    coordinates along its dim (``model_a``, ``layer_b``, ...)."""
    try:
        import xarray as xr
    except ImportError:
        raise InvalidInput("to_xarray() needs xarray: pip install 'actdb[xarray]'") from None
    m = layout(rows, measure)
    coords: dict[str, Any] = {"a": m["a"], "b": m["b"]}
    for side in ("a", "b"):
        reps = m[f"{side}_reps"]
        for key in ("model", "checkpoint", "step", "site", "layer", "pooling", "rep_id"):
            values = [r[key] for r in reps]
            if key in ("step", "layer") and any(v is None for v in values):
                column = np.array([np.nan if v is None else v for v in values], dtype=float)
            else:
                column = np.asarray(values)
            coords[f"{key}_{side}"] = (side, column)
    return xr.DataArray(m["values"], dims=("a", "b"), coords=coords, name=m["measure"],
                        attrs={"measure": m["measure"], "kind": m["kind"]})


def pivot_frame(frame: Any, *, index: str | list[str], columns: str | list[str], values: str = "value") -> Any:
    """``frame.pivot(index=, columns=, values=)`` with errors that name the fix."""
    wanted = [c for part in (index, columns, values) for c in ([part] if isinstance(part, str) else part)]
    unknown = [c for c in wanted if c not in frame.columns]
    if unknown:
        raise InvalidInput(f"pivot: no column(s) {unknown}; the results have {', '.join(map(str, frame.columns))}")
    try:
        return frame.pivot(index=index, columns=columns, values=values)
    except ValueError as exc:
        raise InvalidInput(f"pivot: several results share one (index, columns) cell ({exc}); add the column that "
                           "tells them apart (e.g. measure, site_a, checkpoint_b) to index or columns, or pass "
                           "measure=...") from None
