"""Many reps as one lazy labelled array: ``Selection.to_xarray()``.

The reps of a selection are stacked along the selection fields that vary (in this order):
``model``; ``step`` (or ``checkpoint`` when a step is unknown); ``site`` (the site with its
layer number replaced by ``*``, e.g. ``attn.*`` beside ``hidden.*``) and ``layer``; then every
rep's ``row`` and ``feature``. A field that does not vary is a scalar coordinate instead.

Each rep is one ``dask.array`` over its stored chunks (:class:`LazyRows`, chunked along rows
with the rep's ``chunk_rows``): building the array opens nothing and reads no value; computing
a slice (``.sel(layer=3).values``) reads only the chunks it covers, through the rep's
:class:`~actdb.store.arrays.RepArray` (the local shard reader or zarr's). The graph is for
dask's threaded scheduler (the default); ship values, not the graph, to other processes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from actdb.errors import InvalidInput
from actdb.store.records import RepRecord

if TYPE_CHECKING:
    import dask.array
    import xarray as xr

    from actdb.query.storage import Storage
    from actdb.store.arrays import RepArray

_FIX = "filter the selection (e.g. .filter(model=..., site=..., dataset=...))"


def _xarray() -> Any:
    try:
        import xarray as xr
    except ImportError:
        raise InvalidInput("to_xarray() needs xarray: pip install 'actdb[xarray]'") from None
    return xr


class LazyRows:
    """Array-like over one rep for ``dask.array.from_array``: ``shape``, ``dtype``, ``ndim`` and a
    ``__getitem__`` that opens the rep on first use and reads only the row range asked for."""

    def __init__(self, storage: Storage, rep: RepRecord):
        self._storage, self.rep = storage, rep
        self.shape = (rep.n_rows, rep.dim)
        self.dtype = np.dtype(np.float16) if rep.dtype == "float16" else np.dtype(np.float32)
        self.ndim = 2
        self._array: RepArray | None = None
        self._lock = threading.Lock()

    def array(self) -> RepArray:
        with self._lock:
            if self._array is None:
                opened = self._storage.open_rows(self.rep)
                opened.has_checksums  # noqa: B018 - opens and checks the array once, before threads share it
                self._array = opened
            return self._array

    def __getitem__(self, key: tuple[slice, ...] | slice) -> np.ndarray:
        rows, cols = (*key, slice(None))[:2] if isinstance(key, tuple) else (key, slice(None))
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise InvalidInput(f"rows of {self.rep.label()} are read by contiguous slices, not {rows!r}")
        start, stop, _ = rows.indices(self.shape[0])
        if stop <= start:
            return np.empty((0, self.shape[1]), dtype=self.dtype)[:, cols]
        block: np.ndarray = self.array()[start:stop]
        return block[:, cols]


def rep_dask(storage: Storage, rep: RepRecord) -> dask.array.Array:
    """One rep as a dask array ``(n_rows, dim)``, one task per stored chunk; reads nothing."""
    import dask.array as da

    rows = LazyRows(storage, rep)
    name = f"actdb-rep-{rep.store}-{rep.rep_id}-{rep.checksum or ''}"
    meta = np.empty((0, 0), dtype=rows.dtype)
    out: dask.array.Array = da.from_array(  # type: ignore[no-untyped-call]
        rows, chunks=(max(1, rep.chunk_rows), rep.dim), name=name, lock=False, asarray=False, fancy=False, meta=meta)
    return out


def check_row_space(reps: Sequence[RepRecord]) -> None:
    """InvalidInput unless every rep has the same rows: one dataset, one pooling, one token table
    (token-level reps), one row count."""
    first = reps[0]

    def show(r: RepRecord) -> str:
        return f"{r.label()} (rep {r.rep_id}, dataset {r.dataset!r}, pooling {r.pooling!r}, {r.n_rows} rows)"

    def one(field: str) -> str:
        values = dict.fromkeys(str(getattr(r, field)) for r in reps)
        return " or ".join(f".filter({field}={v!r})" for v in values)

    for r in reps[1:]:
        if r.dataset_hash != first.dataset_hash:
            raise InvalidInput(f"to_xarray() stacks reps over the same rows, but {show(first)} and {show(r)} are "
                               f"over different datasets; select one dataset: {one('dataset')}")
        if r.pooling != first.pooling:
            raise InvalidInput(f"to_xarray() stacks reps over the same rows, but {show(first)} and {show(r)} are "
                               f"pooled differently; select one pooling: {one('pooling')}")
        if r.tokens_hash != first.tokens_hash:
            raise InvalidInput(f"to_xarray() stacks reps over the same rows, but {show(first)} and {show(r)} use "
                               f"different token tables (tokenizers {first.tokenizer!r} and {r.tokenizer!r}); "
                               f"select one: {one('tokenizer')}")
        if r.n_rows != first.n_rows:
            raise InvalidInput(f"to_xarray() stacks reps over the same rows, but {show(first)} and {show(r)} have "
                               f"different numbers of rows; {_FIX}")


def _site_kind(rep: RepRecord) -> str:
    """The site with its layer number replaced by ``*`` (``blocks.3.attn`` -> ``blocks.*.attn``),
    or the site itself when its layer is unknown or not written in it."""
    if rep.layer is None:
        return rep.site
    for candidate in (rep.layer, rep.layer - 1):  # hidden.L is layer L; a module of block k is layer k + 1
        kind, n = re.subn(rf"(?<![0-9]){candidate}(?![0-9])", "*", rep.site, count=1)
        if n:
            return kind
    return rep.site


def _axes(reps: Sequence[RepRecord]) -> list[tuple[str, Any]]:
    """The stacking dims ``(name, key of a rep)``, outermost first: the fields that vary."""
    axes: list[tuple[str, Any]] = []
    if len({r.model for r in reps}) > 1:
        axes.append(("model", lambda r: r.model))
    if len({r.checkpoint for r in reps}) > 1:
        steps_known = all(r.step is not None for r in reps)
        axes.append(("step", lambda r: r.step) if steps_known else ("checkpoint", lambda r: r.checkpoint))
    layers_known = all(r.layer is not None for r in reps)
    if len({r.site for r in reps}) > 1:
        if layers_known:
            if len({_site_kind(r) for r in reps}) > 1:
                axes.append(("site", _site_kind))
            if len({r.layer for r in reps}) > 1:
                axes.append(("layer", lambda r: r.layer))
        else:
            axes.append(("site", lambda r: r.site))
    return axes


def _grid(reps: Sequence[RepRecord],
          axes: list[tuple[str, Any]]) -> tuple[list[list[Any]], dict[tuple[Any, ...], RepRecord]]:
    """The sorted values of each axis and the rep at each cell; InvalidInput when a cell is
    empty or holds two reps."""
    values = [sorted({key(r) for r in reps}) for _, key in axes]
    cells: dict[tuple[Any, ...], RepRecord] = {}
    for r in reps:
        cell = tuple(key(r) for _, key in axes)
        if cell in cells:
            names = ", ".join(n for n, _ in axes) or "no varying field"
            raise InvalidInput(f"{cells[cell].label()} and {r.label()} fall in the same cell of the stacked array "
                               f"(dims {names}); {_FIX} so that each cell holds one rep")
        cells[cell] = r
    total = int(np.prod([len(v) for v in values])) if values else 1
    if len(cells) != total:
        missing = next(c for c in _cells(values) if c not in cells)
        where = ", ".join(f"{n}={v!r}" for (n, _), v in zip(axes, missing, strict=True))
        raise InvalidInput(f"the selected reps do not fill a full grid: no rep at {where} ({len(cells)} reps "
                           f"for {total} cells); {_FIX} so that every combination is stored")
    return values, cells


def _cells(values: list[list[Any]]) -> Iterator[tuple[Any, ...]]:
    import itertools

    return iter(itertools.product(*values))


def _stack(values: list[list[Any]], cells: dict[tuple[Any, ...], dask.array.Array],
           prefix: tuple[Any, ...] = ()) -> dask.array.Array:
    import dask.array as da

    if len(prefix) == len(values):
        return cells[prefix]
    out: dask.array.Array = da.stack(  # type: ignore[no-untyped-call]
        [_stack(values, cells, (*prefix, v)) for v in values[len(prefix)]])
    return out


def _row_coords(storage: Storage, rep: RepRecord) -> dict[str, Any]:
    """``row`` (0..n-1), ``example`` and, token-level, ``position`` (from the token table)."""
    n = rep.n_rows
    coords: dict[str, Any] = {"row": np.arange(n, dtype=np.int64)}
    if rep.pooling == "token" and rep.tokenization_id is not None:
        tokens = storage.token_table(rep)
        for name in ("example", "position"):
            if name in tokens.column_names:
                coords[name] = ("row", np.asarray(tokens.column(name).to_numpy(), dtype=np.int64))
    else:
        coords["example"] = ("row", np.arange(n, dtype=np.int64))
    return coords


def _labels(reps: Sequence[RepRecord], axes: list[tuple[str, Any]], values: list[list[Any]],
            cells: dict[tuple[Any, ...], RepRecord]) -> dict[str, Any]:
    """Coordinates of the stacking dims, non-index ones along a dim when one value per index
    value, and scalar coordinates for the fields that do not vary."""
    coords: dict[str, Any] = {}
    names = [n for n, _ in axes]
    for (name, _), vals in zip(axes, values, strict=True):
        coords[name] = np.asarray(vals)
    for field in ("model", "checkpoint", "step", "site", "layer"):
        if field in names:
            continue
        seen = {getattr(r, field) for r in reps}
        if len(seen) == 1:
            value = seen.pop()
            if value is not None:
                coords[field] = value
            continue
        for i, name in enumerate(names):  # one value per index value of one dim: a coordinate along it
            along: dict[Any, set[Any]] = {}
            for cell, r in cells.items():
                along.setdefault(cell[i], set()).add(getattr(r, field))
            if all(len(s) == 1 and None not in s for s in along.values()):
                coords[field] = (name, np.asarray([next(iter(along[v])) for v in values[i]]))
                break
    return coords


def stack_reps(storage: Storage, reps: Sequence[RepRecord]) -> xr.DataArray:
    """Reps of one row space and one width as one lazy DataArray (see the module docstring)."""
    xarray = _xarray()
    axes = _axes(reps)
    values, cells = _grid(reps, axes)
    data = _stack(values, {cell: rep_dask(storage, r) for cell, r in cells.items()})
    first = reps[0]
    coords = {**_labels(reps, axes, values, cells), **_row_coords(storage, first)}
    attrs = {"dataset": first.dataset, "pooling": first.pooling, "dtype": first.dtype}
    if first.tokenizer is not None:
        attrs["tokenizer"] = first.tokenizer
    if len({r.store for r in reps}) == 1:
        attrs["store"] = first.store
    dims = (*(n for n, _ in axes), "row", "feature")
    out: xr.DataArray = xarray.DataArray(data, dims=dims, coords=coords, attrs=attrs, name="activations")
    return out


def to_xarray(storage: Storage, reps: Sequence[RepRecord]) -> xr.DataArray | xr.Dataset:
    """The reps as a DataArray (one width) or a Dataset (several widths); see
    :meth:`actdb.query.selection.Selection.to_xarray`."""
    xarray = _xarray()
    if not reps:
        raise InvalidInput("to_xarray(): the selection matches no complete rep; widen its filters "
                           "(list the reps with db.reps() or `actdb ls STORE reps`)")
    check_row_space(reps)
    widths = sorted({r.dim for r in reps})
    if len(widths) == 1:
        return stack_reps(storage, reps)
    groups = {d: [r for r in reps if r.dim == d] for d in widths}
    models = [{r.model for r in g} for g in groups.values()]
    by_model = all(len(m) == 1 for m in models) and len({next(iter(m)) for m in models}) == len(models)
    variables: dict[str, Any] = {}
    for d, group in groups.items():
        arr = stack_reps(storage, group).rename({"feature": f"feature_{d}"})
        name = group[0].model if by_model else f"width_{d}"
        scalars = [c for c in arr.coords if arr.coords[c].ndim == 0]
        arr.attrs.update({c: arr.coords[c].item() for c in scalars})
        variables[name] = arr.drop_vars(scalars).rename(name)
    try:
        merged: xr.Dataset = xarray.merge(list(variables.values()), join="outer", compat="no_conflicts",
                                      combine_attrs="drop_conflicts")
    except (ValueError, xarray.MergeError) as exc:
        listing = ", ".join(f"{d} ({len(g)} reps)" for d, g in groups.items())
        raise InvalidInput(f"to_xarray(): the reps have different widths ({listing}) and their groups do not "
                           f"share labels ({exc}); select one width, e.g. .filter(model=...)") from None
    for name, arr in variables.items():
        merged[name].attrs = arr.attrs
    return merged
