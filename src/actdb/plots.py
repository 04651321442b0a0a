"""Plots of comparison results: heatmaps, training trajectories, small multiples.

Every function takes the rows of a computed comparison (a :class:`~actdb.query.ResultSet`,
its ``.rows``, or an Arrow table of them) and returns a :class:`matplotlib.figure.Figure`
built without ``pyplot``, so no global figure state is created or leaked; save it with
:func:`save` (PNG or SVG) or :func:`render` (bytes).

Readable defaults: a perceptual colormap (viridis), a fixed 0-1 colour range for
similarities, titles naming the measure and the number of rows ``n`` the values were
computed on, axis labels naming the model, checkpoint and layer, and the values written
in the cells of small heatmaps. Where the results carry jackknife standard errors
(``compare(..., stderr=True)``; the rows' ``stderr`` column), trajectories shade a band of
value ± stderr around each line and heatmaps can write ``± stderr`` in their cells
(``show_stderr=True``); without them the figures are unchanged.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from actdb.errors import InvalidInput
from actdb.query.matrix import pick_measure

ImageFormat = Literal["png", "svg"]
ANNOTATE_MAX_CELLS = 144  # write values into cells up to a 12 x 12 matrix
CMAP = "viridis"


# ---------------------------------------------------------------- row handling
def _rows(results: Any) -> list[dict[str, Any]]:
    if hasattr(results, "to_pylist"):  # pyarrow.Table
        return list(results.to_pylist())
    if hasattr(results, "rows"):  # ResultSet
        return list(results.rows)
    return list(results)


def _one_measure(rows: list[dict[str, Any]], measure: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The rows of one measure (:func:`~actdb.query.matrix.pick_measure`); empty rows say
    there is nothing to plot."""
    if not rows:
        raise InvalidInput("nothing to plot: the comparison has no rows (check the selections' filters)")
    return pick_measure(rows, measure)


def _stderr(row: dict[str, Any]) -> float | None:
    """The row's jackknife standard error, or None when none was computed (or it is not finite)."""
    se = row.get("stderr")
    return float(se) if se is not None and math.isfinite(float(se)) else None


def _n_text(rows: Iterable[dict[str, Any]]) -> str:
    ns = sorted({int(r["n"]) for r in rows if r.get("n") is not None})
    if not ns:
        return ""
    return f"n={ns[0]:,}" if len(ns) == 1 else f"n={ns[0]:,}-{ns[-1]:,}"


def _kind(rows: list[dict[str, Any]]) -> str:
    return str(rows[0].get("kind") or "similarity")


def _side_key(row: dict[str, Any], side: str) -> tuple[Any, ...]:
    return tuple(row.get(f"{k}_{side}") for k in ("store", "model", "checkpoint", "site", "pooling"))


def _site_label(row: dict[str, Any], side: str, varying: set[str]) -> str:
    parts = []
    if "model" in varying:
        parts.append(str(row.get(f"model_{side}")))
    if "checkpoint" in varying:
        parts.append(str(row.get(f"checkpoint_{side}")))
    layer, site = row.get(f"layer_{side}"), str(row.get(f"site_{side}"))
    parts.append(f"L{layer}" if layer is not None and site == f"hidden.{layer}" else site)
    if "pooling" in varying:
        parts[-1] += f" [{row.get(f'pooling_{side}')}]"
    return "/".join(parts)


def _axis_title(rows: list[dict[str, Any]], side: str, varying: set[str]) -> str:
    fixed = []
    for key in ("model", "checkpoint"):
        if key not in varying:
            fixed.append(f"{key} {rows[0].get(f'{key}_{side}')}")
    what = "layer" if all(r.get(f"layer_{side}") is not None for r in rows) else "site"
    return f"{side.upper()}: {what}" + (f" ({', '.join(fixed)})" if fixed else "")


def _varying(rows: list[dict[str, Any]], side: str) -> set[str]:
    return {k for k in ("model", "checkpoint", "pooling") if len({r.get(f"{k}_{side}") for r in rows}) > 1}


def _norm(kind: str, values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if kind == "similarity" and all(-1e-9 <= v <= 1 + 1e-9 for v in finite):
        return 0.0, 1.0
    if not finite:
        return 0.0, 1.0
    lo, hi = min(0.0, min(finite)), max(finite)
    return lo, hi if hi > lo else lo + 1.0


def new_figure(width: float, height: float) -> Any:
    """A Figure on an Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _line_axes(ax: Any) -> tuple[Any, Any]:
    """The figure and axes a line plot draws on: ``ax``'s, or a new 7.5 x 4.8 in figure's."""
    if ax is None:
        fig = new_figure(7.5, 4.8)
        return fig, fig.add_subplot()
    return _figure_of(ax), ax


def _figure_of(ax: Any) -> Any:
    """The figure of a user's Axes (``ax=``), or InvalidInput when it is not an Axes."""
    fig = getattr(ax, "figure", None)
    if fig is None or not hasattr(ax, "imshow"):
        raise InvalidInput(f"ax= takes a matplotlib Axes (fig.add_subplot(), plt.subplots()), not "
                           f"{type(ax).__name__}")
    return fig


# ------------------------------------------------------------------- heatmaps
def _matrix(rows: list[dict[str, Any]]) -> tuple[list[str], list[str], list[list[float]], str, str,
                                                   list[list[float]]]:
    """Labels (A side: rows, B side: columns), values, axis titles and standard errors
    (NaN where none was computed) of one measure's rows."""
    import numpy as np

    va, vb = _varying(rows, "a"), _varying(rows, "b")
    ya: dict[tuple[Any, ...], str] = {}
    xb: dict[tuple[Any, ...], str] = {}
    for r in rows:
        ya.setdefault(_side_key(r, "a"), _site_label(r, "a", va))
        xb.setdefault(_side_key(r, "b"), _site_label(r, "b", vb))
    yi = {k: i for i, k in enumerate(ya)}
    xi = {k: i for i, k in enumerate(xb)}
    mat = np.full((len(ya), len(xb)), np.nan)
    err = np.full((len(ya), len(xb)), np.nan)
    for r in rows:
        i, j = yi[_side_key(r, "a")], xi[_side_key(r, "b")]
        mat[i, j] = r["value"]
        se = _stderr(r)
        err[i, j] = np.nan if se is None else se
    return (list(ya.values()), list(xb.values()), mat.tolist(), _axis_title(rows, "a", va),
            _axis_title(rows, "b", vb), err.tolist())


def _draw_heatmap(ax: Any, rows: list[dict[str, Any]], measure: str, vmin: float, vmax: float,
                  annotate: bool | None, title: str | None, show_stderr: bool = False) -> Any:
    import numpy as np

    ylabels, xlabels, mat, ytitle, xtitle, err = _matrix(rows)
    data = np.ma.masked_invalid(np.asarray(mat, dtype=float))
    image = ax.imshow(data, cmap=CMAP, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(xlabels)), labels=xlabels, rotation=45 if max(map(len, xlabels)) > 4 else 0,
                  ha="right" if max(map(len, xlabels)) > 4 else "center")
    ax.set_yticks(range(len(ylabels)), labels=ylabels)
    ax.set_xlabel(xtitle)
    ax.set_ylabel(ytitle)
    ax.set_title(title if title is not None else f"{measure} ({_n_text(rows)})")
    if annotate is None:
        annotate = data.size <= ANNOTATE_MAX_CELLS
    if annotate:
        cmap = image.get_cmap()
        missing = np.ma.getmaskarray(data)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if missing[i, j]:
                    continue
                v = float(data[i, j])
                r, g, b, _ = cmap((v - vmin) / (vmax - vmin) if vmax > vmin else 0.5)
                light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
                se = err[i][j]
                text = f"{v:.2f}\n±{se:.2f}" if show_stderr and math.isfinite(se) else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if "\n" in text else 8,
                        color="black" if light else "white")
    return image


def heatmap(results: Any, *, measure: str | None = None, annotate: bool | None = None,
            title: str | None = None, ax: Any = None, show_stderr: bool = False) -> Any:
    """A site x site matrix of one measure: rows are the A side's reps, columns the B side's.

    ``results``: a ResultSet / rows / Arrow table of a comparison (typically
    ``a.compare(b, pairs="all")``). Similarities use a fixed 0-1 colour range; cells carry
    their values when the matrix has at most 144 cells (``annotate`` overrides). ``ax``: draw
    into this matplotlib Axes (to compose a figure) instead of a new figure; the Axes'
    figure is returned. ``show_stderr=True``: annotated cells whose value has a jackknife
    standard error (``compare(..., stderr=True)``) also write ``± stderr`` under the value.
    """
    measure, rows = _one_measure(_rows(results), measure)
    if ax is None:
        ylabels, xlabels, *_ = _matrix(rows)
        width = min(16.0, 3.0 + 0.55 * len(xlabels))
        height = min(14.0, 2.5 + 0.45 * len(ylabels))
        fig = new_figure(max(width, 5.0), max(height, 4.0))
        ax = fig.add_subplot()
    else:
        fig = _figure_of(ax)
    vmin, vmax = _norm(_kind(rows), [r["value"] for r in rows])
    image = _draw_heatmap(ax, rows, measure, vmin, vmax, annotate, title, show_stderr)
    fig.colorbar(image, ax=ax, label=f"{measure} ({_kind(rows)})")
    return fig


def grid(results: Any, *, measure: str | None = None, by: str = "checkpoint", columns: int | None = None,
         title: str | None = None, show_stderr: bool = False) -> Any:
    """Small multiples: one heatmap per value of ``by`` on the A side (``checkpoint`` by
    default, ordered by training step), sharing one colour scale and one colour bar.
    ``show_stderr``: as in :func:`heatmap`, for the panels whose cells are annotated."""
    if by not in ("checkpoint", "model", "dataset"):
        raise InvalidInput(f"grid(by={by!r}): choose checkpoint, model or dataset")
    measure, rows = _one_measure(_rows(results), measure)
    key = "dataset" if by == "dataset" else f"{by}_a"
    groups: dict[Any, list[dict[str, Any]]] = {}
    order = sorted(rows, key=lambda r: (r.get("step_a") is None, r.get("step_a") or 0)) if by == "checkpoint" else rows
    for r in order:
        groups.setdefault(r.get(key), []).append(r)
    n = len(groups)
    cols = columns or min(n, 4)
    nrows = math.ceil(n / cols)
    sizes = [len(_matrix(g)[1]) for g in groups.values()]
    cell = min(4.0, 1.6 + 0.3 * max(sizes))
    fig = new_figure(cell * cols + 1.5, cell * nrows + 0.8)
    vmin, vmax = _norm(_kind(rows), [r["value"] for r in rows])
    axes = fig.subplots(nrows, cols, squeeze=False)
    image = None
    for i, (ax, (value, g)) in enumerate(zip(axes.flat, groups.items())):
        step = g[0].get("step_a") if by == "checkpoint" else None
        label = f"{by} {value}" + (f" (step {step:,})" if step is not None and str(step) not in str(value) else "")
        image = _draw_heatmap(ax, g, measure, vmin, vmax, annotate=len(sizes) <= 4 and max(sizes) <= 6,
                              title=f"{label}, {_n_text(g)}", show_stderr=show_stderr)
        # the panel title names the group: keep the axis titles short, and only on the outer panels
        ax.set_ylabel(ax.get_ylabel().split(" (")[0] if i % cols == 0 else "")
        ax.set_xlabel(ax.get_xlabel().split(" (")[0] if i >= n - cols else "")
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    fig.suptitle(title if title is not None else f"{measure} by {by} ({_n_text(rows)})")
    if image is not None:
        fig.colorbar(image, ax=axes, label=f"{measure} ({_kind(rows)})", shrink=0.8)
    return fig


# ---------------------------------------------------------------- trajectory
def _band_widths(stderr_bands: Any) -> list[float]:
    """``stderr_bands`` parsed: positive, finite multiples of the standard error."""
    items = [stderr_bands] if isinstance(stderr_bands, int | float) else stderr_bands
    try:
        widths = [float(k) for k in items]
    except (TypeError, ValueError):
        widths = [math.nan]
    if not all(math.isfinite(k) and k > 0 for k in widths):
        raise InvalidInput(f"stderr_bands takes positive multiples of the standard error, e.g. (1,) or (1, 2); "
                           f"got {stderr_bands!r}")
    return widths


def _bands(ax: Any, pts: list[tuple[int, float, float | None]], colour: Any, widths: Sequence[float]) -> None:
    """Shade value ± k·stderr for each k in ``widths`` around one line (the wider, the lighter);
    points without a standard error leave a gap. Nothing is drawn when no point has one."""
    if not widths or all(p[2] is None for p in pts):
        return
    xs = [p[0] for p in pts]
    for k in sorted(widths, reverse=True):
        alpha = 0.25 / max(1.0, k)
        lo = [v - k * se if se is not None else math.nan for _, v, se in pts]
        hi = [v + k * se if se is not None else math.nan for _, v, se in pts]
        ax.fill_between(xs, lo, hi, color=colour, alpha=alpha, linewidth=0, gid=f"stderr_band:{k:g}")


def trajectory(results: Any, *, measure: str | None = None, title: str | None = None,
               log_x: bool | None = None, ax: Any = None, stderr_bands: Sequence[float] = (1.0,)) -> Any:
    """A measure against training step (the A side's ``step``), one line per layer (site).

    ``results`` usually comes from ``sel.compare(pairs="to_reference:final")`` or
    ``pairs="consecutive"``. The x axis is logarithmic when steps span two decades or more
    (symlog when step 0 is present) unless ``log_x`` says otherwise. ``ax``: draw into this
    matplotlib Axes instead of a new figure; the Axes' figure is returned.

    Where the rows carry jackknife standard errors (``compare(..., stderr=True)``), each line
    gets a shaded band of value ± k·stderr for each k in ``stderr_bands`` (default ``(1,)``;
    ``(1, 2)`` adds a lighter ±2·stderr band; ``()`` draws none); points without one leave a
    gap in the band, and rows without any draw no band at all.
    """
    widths = _band_widths(stderr_bands)
    measure, rows = _one_measure(_rows(results), measure)
    rows = [r for r in rows if r.get("step_a") is not None]
    if not rows:
        raise InvalidInput("trajectory needs checkpoints with step numbers on the A side; these have none")
    lines: dict[tuple[Any, ...], list[tuple[int, float, float | None]]] = {}
    labels: dict[tuple[Any, ...], str] = {}
    models = {r.get("model_a") for r in rows}
    for r in rows:
        k = (r.get("model_a"), r.get("layer_a") if r.get("layer_a") is not None else -1, r.get("site_a"))
        lines.setdefault(k, []).append((int(r["step_a"]), float(r["value"]), _stderr(r)))
        site = str(r.get("site_a"))
        base = f"layer {r['layer_a']}" if r.get("layer_a") is not None and site == f"hidden.{r['layer_a']}" else site
        labels[k] = (f"{r.get('model_a')} " if len(models) > 1 else "") + base
    from matplotlib import colormaps

    fig, ax = _line_axes(ax)
    cmap = colormaps[CMAP]
    keys = sorted(lines, key=lambda k: (str(k[0]), k[1], str(k[2])))
    for i, k in enumerate(keys):
        pts = sorted(lines[k], key=lambda p: (p[0], p[1]))
        colour = cmap(0.9 * i / max(1, len(keys) - 1))
        _bands(ax, pts, colour, widths)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3.5, linewidth=1.6,
                color=colour, label=labels[k])
    steps = sorted({int(r["step_a"]) for r in rows})
    positive = [s for s in steps if s > 0]
    if log_x is None:
        log_x = len(positive) >= 2 and positive[-1] / positive[0] >= 100
    if log_x:
        if steps[0] <= 0:
            ax.set_xscale("symlog", linthresh=max(1, positive[0] if positive else 1))
        else:
            ax.set_xscale("log")
    kind = _kind(rows)
    if kind == "similarity":
        lo, hi = _norm(kind, [r["value"] for r in rows])
        ax.set_ylim(lo - 0.02, hi + 0.02)
    refs = sorted({str(r.get("checkpoint_b")) for r in rows})
    against = f" vs {refs[0]}" if len(refs) == 1 else ""
    model_text = f" ({next(iter(models))})" if len(models) == 1 else ""
    ax.set_xlabel(f"training step{model_text}")
    ax.set_ylabel(f"{measure} ({kind})")
    ax.set_title(title if title is not None else f"{measure}{against} by layer ({_n_text(rows)})")
    ax.grid(True, alpha=0.3)
    ax.legend(title="site", fontsize=8, loc="best", ncol=2 if len(keys) > 8 else 1)
    return fig


# --------------------------------------------------------------------- probes
def _probe_rows(probes: Any) -> list[dict[str, Any]]:
    """Rows of ``Selection.probe(...)`` (a DataFrame), of ``SELECT * FROM probes`` (Arrow) or dicts."""
    if hasattr(probes, "to_dict") and hasattr(probes, "columns"):  # pandas.DataFrame
        return list(probes.to_dict("records"))
    return _rows(probes)


def probe(probes: Any, *, by: str = "layer", title: str | None = None, ax: Any = None) -> Any:
    """Probe accuracy by layer (one line per checkpoint, ``by="layer"``) or by training step
    (one line per layer, ``by="step"``): when, and where, a label becomes linearly decodable.

    ``probes``: the DataFrame ``Selection.probe(...)`` returns, or the rows of the ``probes``
    view (of one label and method; filter the others out first). ``ax``: draw into this
    matplotlib Axes instead of a new figure; the Axes' figure is returned."""
    if by not in ("layer", "step"):
        raise InvalidInput(f"by={by!r}: choose 'layer' (x: layer, a line per checkpoint) or 'step' (x: training "
                           "step, a line per layer)")
    rows = _probe_rows(probes)
    if not rows:
        raise InvalidInput("no probe results to plot: run Selection.probe(...) first (or check the filters)")
    for column in ("label", "method"):
        if len({r.get(column) for r in rows}) > 1:
            seen = sorted({str(r.get(column)) for r in rows})
            raise InvalidInput(f"the probe results mix several {column}s ({seen}); plot one {column} at a time")
    x_key = by
    rows = [r for r in rows if r.get(x_key) is not None and not _is_nan(r.get(x_key))]
    if not rows:
        raise InvalidInput(f"by={by!r} needs reps with {by} numbers; these have none (try by="
                           f"{'step' if by == 'layer' else 'layer'!r})")
    models = {r.get("model") for r in rows}
    lines: dict[tuple[Any, ...], list[tuple[int, float]]] = {}
    labels: dict[tuple[Any, ...], str] = {}
    for r in rows:
        if by == "layer":
            k: tuple[Any, ...] = (str(r.get("model")), r.get("step") if r.get("step") is not None else -1,
                                  str(r.get("checkpoint")))
            text = str(r.get("checkpoint"))
        else:
            k = (str(r.get("model")), r.get("layer") if r.get("layer") is not None else -1, str(r.get("site")))
            text = f"layer {r['layer']}" if r.get("layer") is not None else str(r.get("site"))
        lines.setdefault(k, []).append((int(r[x_key]), float(r["accuracy"])))
        labels[k] = (f"{r.get('model')} " if len(models) > 1 else "") + text
    from matplotlib import colormaps

    fig, ax = _line_axes(ax)
    cmap = colormaps[CMAP]
    keys = sorted(lines, key=lambda k: (k[0], float(k[1]) if not _is_nan(k[1]) else -1.0, k[2]))
    for i, k in enumerate(keys):
        pts = sorted(lines[k])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3.5, linewidth=1.6,
                color=cmap(0.9 * i / max(1, len(keys) - 1)), label=labels[k])
    if by == "step":
        steps = sorted({int(r["step"]) for r in rows})
        positive = [s for s in steps if s > 0]
        if len(positive) >= 2 and positive[-1] / positive[0] >= 100 and steps[0] <= 0:
            ax.set_xscale("symlog", linthresh=positive[0])
        elif len(positive) >= 2 and positive[-1] / positive[0] >= 100:
            ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    model_text = f" ({next(iter(models))})" if len(models) == 1 else ""
    ax.set_xlabel(("layer" if by == "layer" else "training step") + model_text)
    ax.set_ylabel("held-out accuracy")
    first = rows[0]
    folds = {r.get("folds") for r in rows}
    fold_text = f", {folds.pop()}-fold" if len(folds) == 1 else ""
    ax.set_title(title if title is not None else
                 f"{first.get('method')} probe of {first.get('label')!r} by {by} ({_n_text(rows)}{fold_text})")
    ax.grid(True, alpha=0.3)
    ax.legend(title="checkpoint" if by == "layer" else "layer", fontsize=8, loc="best",
              ncol=2 if len(keys) > 8 else 1)
    return fig


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


# --------------------------------------------------------------------- output
def render(fig: Any, fmt: ImageFormat = "png", *, dpi: int = 120) -> bytes:
    """The figure as PNG or SVG bytes."""
    if fmt not in ("png", "svg"):
        raise InvalidInput(f"image format {fmt!r} is not supported; choose png or svg")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()


def save(fig: Any, path: str | Path, *, fmt: ImageFormat | None = None, dpi: int = 120) -> Path:
    """Write the figure; the format comes from ``fmt`` or the file suffix (.png, .svg)."""
    path = Path(path)
    chosen = fmt or path.suffix.lstrip(".").lower()
    if chosen not in ("png", "svg"):
        raise InvalidInput(f"cannot tell the image format of {str(path)!r}; name it .png or .svg")
    image_format: ImageFormat = "png" if chosen == "png" else "svg"
    path.write_bytes(render(fig, image_format, dpi=dpi))
    return path


__all__ = ["grid", "heatmap", "new_figure", "render", "save", "trajectory"]
