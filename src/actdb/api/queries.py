"""Filtered, paginated reads of the ``dissimilarities`` view for ``GET /v1/results``.

Filters use the selection filter syntax (values, globs, ``a|b`` lists, ``a:b`` ranges),
parsed by :func:`actdb.query.filters.parse_filter_string` and turned into bound SQL
parameters: no user text is ever spliced into the SQL.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from actdb.errors import InvalidInput
from actdb.query.filters import parse_filter_string
from actdb.store.sql_readonly import view_page

if TYPE_CHECKING:
    from actdb.database import Database

# filter name -> (filter-syntax key used to parse the value, view column)
RESULT_FILTERS: dict[str, tuple[str, str]] = {
    "dataset": ("dataset", "dataset"),
    **{f"{k}_{s}": (k, f"{k}_{s}") for s in "ab" for k in ("model", "checkpoint", "site", "layer", "step", "pooling")},
    "rep_a": ("rep_id", "rep_a"),
    "rep_b": ("rep_id", "rep_b"),
}
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(\|[A-Za-z0-9_.\-]+)*$")
_COLUMNS = ("result_id, measure, kind, value, stderr, n, model_a, checkpoint_a, step_a, site_a, layer_a, pooling_a, "
            "rep_a, model_b, checkpoint_b, step_b, site_b, layer_b, pooling_b, rep_b, dataset, subset, params, "
            "extra, seconds, computed_at, store_a, store_b")
NUMERIC = {"layer", "step", "rep_id"}


def _like(glob: str) -> str:
    out = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return out.replace("*", "%").replace("?", "_")


def _conditions(column: str, key: str, value: Any, params: dict[str, Any]) -> str:
    alts = value if isinstance(value, list) else [value]
    parts = []
    for alt in alts:
        p = f"p{len(params)}"
        if isinstance(alt, range):
            params[p], params[p + "s"], params[p + "k"] = alt.start, alt.stop, alt.step
            parts.append(f"({column} >= :{p} AND {column} < :{p}s AND ({column} - :{p}) % :{p}k = 0)")
        elif isinstance(alt, slice):
            bounds = []
            if alt.start is not None:
                params[p] = alt.start
                bounds.append(f"{column} >= :{p}")
            if alt.stop is not None:
                params[p + "s"] = alt.stop
                bounds.append(f"{column} < :{p}s")
            parts.append("(" + (" AND ".join(bounds) or f"{column} IS NOT NULL") + ")")
        elif isinstance(alt, str) and any(c in alt for c in "*?["):
            if "[" in alt:
                raise InvalidInput(f"filter {column}={alt!r}: results filters take * and ? globs, not [...]")
            params[p] = _like(alt)
            target = f"CAST({column} AS VARCHAR)" if key in NUMERIC else column
            parts.append(f"{target} LIKE :{p} ESCAPE '\\'")
        else:
            params[p] = alt
            parts.append(f"{column} = :{p}")
    return "(" + " OR ".join(parts) + ")"


def results_where(filters: dict[str, str | None]) -> tuple[str, dict[str, Any]]:
    """A WHERE clause (with bound parameters) for ``dissimilarities`` from filter strings."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for name, text in filters.items():
        if text is None or text == "":
            continue
        if name in ("measure", "kind"):
            if not _NAME.match(text):
                raise InvalidInput(f"bad filter {name}={text!r}: give a name or names separated by '|'")
            names = text.split("|")
            keys = []
            for v in names:
                p = f"p{len(params)}"
                params[p] = v
                keys.append(f":{p}")
            clauses.append(f"{name} IN ({', '.join(keys)})")
            continue
        if name not in RESULT_FILTERS:
            raise InvalidInput(f"unknown results filter {name!r}; filters are measure, kind, "
                               f"{', '.join(RESULT_FILTERS)}")
        key, column = RESULT_FILTERS[name]
        if "," in text:
            raise InvalidInput(f"bad filter token {name}={text!r}: use '|' between alternatives, not ','")
        value = parse_filter_string(f"{key}={text}")[key]
        clauses.append(_conditions(column, key, value, params))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def results_page(db: Database, filters: dict[str, str | None], *, limit: int,
                 offset: int) -> tuple[list[dict[str, Any]], int]:
    """One page of ``dissimilarities`` rows (ordered by result_id) and the total count."""
    where, params = results_where(filters)
    return view_page(db.store, "dissimilarities", _COLUMNS, where, params, order_by="result_id", limit=limit,
                     offset=offset)
