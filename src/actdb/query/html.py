"""HTML for notebooks: the ``_repr_html_`` of selections, comparison plans and result sets.

Every value is escaped (names come from users and attached stores); tables stop after
:data:`MAX_ROWS` rows with a "… N more" line. A selection shows its reps and a plan its
``explain()``, both from the catalog alone (no array is read); a result set shows its rows
and, when it holds one measure over a square of reps (a selection compared with itself), a
small heatmap drawn as coloured HTML cells (no image library).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actdb.query.plan import Comparison
    from actdb.query.selection import Selection

Row = Mapping[str, Any]  # a CompareRow (actdb.query.result_row)
MAX_ROWS = 50
MAX_SIDE = 40  # the largest heatmap drawn (reps a side)
_STYLE = "border-collapse:collapse;font-size:12px"
# viridis at 0, 1/4, 1/2, 3/4, 1 (linear in between)
_RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], total: int | None = None) -> str:
    """An HTML table of ``rows`` (at most :data:`MAX_ROWS`; ``total`` rows in all), escaped."""
    total = len(rows) if total is None else total
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_text(v)}</td>" for v in row) + "</tr>" for row in rows[:MAX_ROWS])
    more = total - min(len(rows), MAX_ROWS)
    tail = f"<p>… {more:,} more</p>" if more > 0 else ""
    return f"<table style='{_STYLE}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{tail}"


def selection_html(selection: Selection) -> str:
    """The reps of ``selection`` (catalog only): model, checkpoint, step, site, layer, pooling,
    rows × dim, dtype, store."""
    reps = selection.resolve()
    rows = [(r.model, r.checkpoint, r.step, r.site, r.layer, r.pooling, f"{r.n_rows:,} × {r.dim}", r.dtype, r.store)
            for r in reps[:MAX_ROWS]]
    title = f"<p><b>{escape(repr(selection))}</b>: {len(reps):,} rep(s)</p>"
    header = ("model", "checkpoint", "step", "site", "layer", "pooling", "rows × dim", "dtype", "store")
    return title + table(header, rows, len(reps))


def comparison_html(plan: Comparison) -> str:
    """``plan.explain()`` (catalog only: no array is read) as preformatted HTML."""
    return f"<pre>{escape(plan.explain(show=False))}</pre>"


def _label(row: Row, side: str) -> str:
    store = row["store_a"] if side == "a" else row["store_b"]
    model, checkpoint, site, pooling = (row["model_a"], row["checkpoint_a"], row["site_a"], row["pooling_a"]) \
        if side == "a" else (row["model_b"], row["checkpoint_b"], row["site_b"], row["pooling_b"])
    where = "" if store in (None, "local") else f"{store}:"
    pooled = "" if pooling in (None, "token") else f"[{pooling}]"
    return f"{where}{model}/{checkpoint}/{site}{pooled}"


def result_html(rows: Sequence[Row]) -> str:
    """A result set: its rows (measure, a, b, value, stderr when computed, n, route, cached)
    and a heatmap when it is one measure over a square of reps."""
    with_se = any(r.get("stderr") is not None for r in rows)
    header = ["measure", "a", "b", "value", *(["stderr"] if with_se else []), "n", "route", "cached"]
    body = [(r["measure"], _label(r, "a"), _label(r, "b"), r["value"], *([r.get("stderr")] if with_se else []),
             r["n"], r["route"], r["cached"]) for r in rows[:MAX_ROWS]]
    title = f"<p><b>ResultSet</b>: {len(rows):,} row(s)</p>"
    return title + heatmap(rows) + table(header, body, len(rows))


def _colour(t: float) -> str:
    """The viridis colour of ``t`` in [0, 1] as ``#rrggbb``."""
    x = min(max(t, 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(x), len(_RAMP) - 2)
    f = x - i
    r, g, b = (round(lo + (hi - lo) * f) for lo, hi in zip(_RAMP[i], _RAMP[i + 1]))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(rows: Sequence[Row]) -> str:
    """A square single-measure result as a grid of coloured cells (each cell's title: the pair
    and its value); an empty string for anything else (several measures, two different sides,
    one rep, more than :data:`MAX_SIDE` reps a side)."""
    from actdb.query.matrix import layout

    if not rows or len({r["measure"] for r in rows}) != 1:
        return ""
    m = layout([dict(r) for r in rows])
    values = m["values"]
    if m["a_reps"] != m["b_reps"] or not 1 < len(m["a"]) <= MAX_SIDE:  # square: the same reps both ways
        return ""
    finite = [float(v) for v in values.flat if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = hi - lo or 1.0
    names = [escape(str(a)) for a in m["a"]]
    cells = []
    for i, name in enumerate(names):
        tds = []
        for j, other in enumerate(names):
            v = float(values[i, j])
            shown = f"{v:.4g}" if math.isfinite(v) else "not computed"
            colour = _colour((v - lo) / span) if math.isfinite(v) else "#dddddd"
            tds.append(f"<td title='{name} vs {other}: {shown}' style='background:{colour};width:14px;"
                       f"height:14px;padding:0'></td>")
        cells.append(f"<tr><th style='text-align:right;padding:0 4px'>{name}</th>{''.join(tds)}</tr>")
    caption = (f"<caption style='caption-side:bottom'>{escape(m['measure'])}: {lo:.4g} (dark) to "
               f"{hi:.4g} (light)</caption>")
    return f"<table class='actdb-heatmap' style='{_STYLE}'>{caption}{''.join(cells)}</table>"
