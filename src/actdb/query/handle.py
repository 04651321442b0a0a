"""One stored rep, by name, read back with its labels.

``db.rep(model="m", checkpoint="final", site="hidden.3")`` (or ``selection.one()``, or
iterating a selection) gives a :class:`RepHandle`: the selection's :class:`RepRecord` record
(every field of it readable as an attribute: ``h.rep_id``, ``h.model``, ``h.n_rows``, ...)
plus readers that open the array only when called:

- :meth:`RepHandle.to_numpy` / :meth:`RepHandle.to_torch`: ``(n_rows, dim)`` values (or a
  row slice / index array of them), in the stored precision unless ``dtype`` says otherwise;
- :meth:`RepHandle.tokens`: the row labels (token table joined with the example labels);
- :meth:`RepHandle.by_example`: a token-level rep as ``(batch, max_pos, dim)`` zero-padded
  values and a ``(batch, max_pos)`` mask, the layout of a TransformerLens cache entry;
- :meth:`RepHandle.to_xarray`: a DataArray with dims ``(row, feature)`` and the token
  columns as coordinates on ``row``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from actdb.errors import InvalidInput
from actdb.query.rows import rep_array
from actdb.store.records import RepRecord

if TYPE_CHECKING:
    from actdb.query.storage import Storage
    from actdb.store.arrays import RepArray

_FIELDS = frozenset(f.name for f in dataclasses.fields(RepRecord))
MAX_PADDED_BYTES = 8 * 2**30  # by_example refuses a padded array larger than this (ask for fewer examples)


class RepHandle:
    """A complete stored rep with readers; a superset of the :class:`RepRecord` record.

    Equal to (and hashed like) its record, so code written for the records that
    ``db.reps()`` used to yield keeps working. Nothing is read when a handle is made.
    """

    __slots__ = ("_storage", "record")

    def __init__(self, record: RepRecord, storage: Storage):
        self.record = record
        self._storage = storage

    # ------------------------------------------------------------ the record
    def __getattr__(self, name: str) -> Any:
        if name in _FIELDS:
            return getattr(self.record, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def rep_id(self) -> int:
        return self.record.id

    @property
    def key(self) -> tuple[str, int]:
        return self.record.key

    @property
    def nbytes(self) -> int:
        return self.record.nbytes

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_rows, dim)``."""
        return (self.record.n_rows, self.record.dim)

    def label(self) -> str:
        return self.record.label()

    def describe(self) -> dict[str, Any]:
        return self.record.describe()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RepHandle):
            return self.record == other.record
        if isinstance(other, RepRecord):
            return self.record == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.record)

    def __repr__(self) -> str:
        r = self.record
        return (f"RepHandle({r.label()}, rep_id={r.rep_id}, dataset={r.dataset!r}, "
                f"shape=({r.n_rows}, {r.dim}), dtype={r.dtype})")

    # --------------------------------------------------------------- values
    def array(self) -> RepArray:
        """The lazy array (``handle.array()[a:b]`` reads only the chunks of rows a..b)."""
        return rep_array(self._storage, self.record)

    def to_numpy(self, rows: slice | Any = None, dtype: Any = None) -> np.ndarray:
        """The values, ``(n_rows, dim)``, or ``(k, dim)`` for ``rows`` (a slice or an array of
        row numbers, negative counting from the end). Stored precision (float16 stays
        float16, float32 and bfloat16 come as float32) unless ``dtype`` is given."""
        arr = self.array()
        index = self._rows(rows)
        out = arr[index] if isinstance(index, slice) else arr.rows(index)
        return out if dtype is None else out.astype(dtype, copy=False)

    def to_torch(self, device: Any = None, dtype: Any = None, *, rows: slice | Any = None) -> Any:
        """The values as a torch tensor (``torch.from_numpy``: no copy on the CPU in the
        stored precision); ``device``/``dtype`` (a torch dtype or its name, e.g.
        ``"float32"``) convert it."""
        import torch

        tensor = torch.from_numpy(self.to_numpy(rows))
        if isinstance(dtype, str):
            resolved = getattr(torch, dtype, None)
            if not isinstance(resolved, torch.dtype):
                raise InvalidInput(f"dtype={dtype!r} is not a torch dtype; use e.g. 'float32' or torch.float16")
            dtype = resolved
        if device is not None or dtype is not None:
            tensor = tensor.to(device=device, dtype=dtype)
        return tensor

    def _rows(self, rows: Any) -> slice | np.ndarray:
        n = self.record.n_rows
        if rows is None:
            return slice(0, n)
        if isinstance(rows, slice):
            for bound in (rows.start, rows.stop):
                if bound is not None and (not isinstance(bound, numbers.Integral) or not -n <= int(bound) <= n):
                    raise InvalidInput(f"rows={rows!r} is out of range for {self.record.label()} ({n} rows); "
                                       f"give bounds between {-n} and {n}")
            start, stop, step = rows.indices(n)
            return slice(start, max(start, stop)) if step == 1 else np.arange(start, stop, step)
        if isinstance(rows, numbers.Integral) and not isinstance(rows, bool):
            rows = [rows]
        index = np.asarray(rows)
        if index.ndim != 1 or not (index.dtype.kind in "iu" or (index.size == 0 and index.dtype.kind == "f")):
            raise InvalidInput(f"rows must be a slice or a 1-d array of row numbers, not {type(rows).__name__} "
                               f"of dtype {index.dtype} and shape {index.shape}")
        index = index.astype(np.int64)
        bad = index[(index < -n) | (index >= n)]
        if bad.size:
            raise InvalidInput(f"row {int(bad[0])} is out of range for {self.record.label()} ({n} rows); "
                               f"row numbers go from 0 to {n - 1} (or -{n} to -1)")
        return np.where(index < 0, index + n, index)

    # --------------------------------------------------------------- labels
    def tokens(self) -> pa.Table:
        """One row per rep row: ``row``, ``example``, and for token-level reps ``position``,
        ``token_id``, ``token``, ``char_start``, ``char_end`` (character span in the
        example's text), ``special``; then the example's ``label`` and ``split``."""
        examples = self._storage.examples(self.record).select(["example", "label", "split"])
        if self.record.pooling != "token" or self.record.tokenization_id is None:
            n = self.record.n_rows
            table = pa.table({"row": pa.array(np.arange(n, dtype=np.int64))}).append_column(
                "example", examples.column("example").slice(0, n))
            return table.append_column("label", examples.column("label").slice(0, n)).append_column(
                "split", examples.column("split").slice(0, n))
        tokens = self._storage.token_table(self.record)
        return tokens.join(examples, "example", join_type="left outer").sort_by("row")

    def by_example(self, dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(values, mask)``: ``values[e, p]`` is the row of example ``e`` at token position
        ``p`` (zeros where there is none), ``(n_examples, max_pos, dim)``; ``mask`` is
        ``(n_examples, max_pos)`` bool, True where a row was stored (padding and dropped
        tokens are False). The layout of a TransformerLens cache entry
        (``cache["resid_post", l]``: batch, pos, d_model). Token-level reps only."""
        r = self.record
        if r.pooling != "token":
            raise InvalidInput(f"{r.label()} is pooled ({r.pooling!r}): it already has one row per example; "
                               "read it with to_numpy() (row i is example i), or select the token-level "
                               "rep with pooling='token'")
        table = self.tokens().select(["example", "position"])
        ex = table.column("example").to_numpy().astype(np.int64)
        pos = table.column("position").to_numpy().astype(np.int64)
        if r.n_examples is None:  # every record read from a catalog has it
            raise InvalidInput(f"{r.label()} does not say how many examples its dataset has; by_example() needs it")
        batch, max_pos = r.n_examples, int(pos.max()) + 1 if len(pos) else 0
        out_dtype = np.dtype(dtype) if dtype is not None else self.array().value_dtype
        size = batch * max_pos * r.dim * out_dtype.itemsize
        if size > MAX_PADDED_BYTES:
            raise InvalidInput(f"by_example() of {r.label()} would be {size / 2**30:.1f} GiB "
                               f"({batch} x {max_pos} x {r.dim}); read row ranges with to_numpy(rows=...) instead")
        if len(pos) and pos.min() < 0:
            raise InvalidInput(f"{r.label()} has a negative token position; by_example() needs positions >= 0")
        values = np.zeros((batch, max_pos, r.dim), dtype=out_dtype)
        mask = np.zeros((batch, max_pos), dtype=np.bool_)
        if len(ex) and np.unique(ex * max_pos + pos).size != len(ex):
            raise InvalidInput(f"{r.label()}'s token table repeats an (example, position) pair; by_example() "
                               "cannot place two rows in one cell: use to_numpy() and tokens() instead")
        values[ex, pos] = self.to_numpy()
        mask[ex, pos] = True
        return values, mask

    def to_xarray(self, rows: slice | Any = None, dtype: Any = None) -> Any:
        """An ``xarray.DataArray`` with dims ``(row, feature)``: the values, the
        :meth:`tokens` columns as coordinates on ``row``, and the rep's identity (model,
        checkpoint, step, site, layer, dataset, pooling, rep_id) as attributes."""
        try:
            import xarray as xr
        except ImportError:
            raise InvalidInput("to_xarray() needs xarray: pip install 'actdb[xarray]'") from None
        index = self._rows(rows)
        values = self.to_numpy(index, dtype)
        labels = self.tokens()
        picked = np.arange(self.record.n_rows)[index]
        coords: dict[str, Any] = {"row": picked}
        for name in labels.column_names:
            if name != "row":
                coords[name] = ("row", labels.column(name).to_numpy(zero_copy_only=False)[picked])
        r = self.record
        attrs = {"model": r.model, "checkpoint": r.checkpoint, "site": r.site, "dataset": r.dataset,
                 "pooling": r.pooling, "rep_id": r.rep_id, "store": r.store}
        attrs.update({k: v for k, v in (("step", r.step), ("layer", r.layer)) if v is not None})
        return xr.DataArray(values, dims=("row", "feature"), coords=coords, attrs=attrs, name=r.label())


# ------------------------------------------------------------------ errors of one()
def _shown(matches: tuple[Any, ...]) -> str:
    return ", ".join(m.describe() for m in matches) or "no filters"


def none_found(selection: Any, matches: tuple[Any, ...]) -> Exception:
    """The :class:`NotFound` of a selection that matches no rep: which filter excludes
    everything the others select, and its closest values."""
    from actdb.errors import NotFound, close_matches

    hints = []
    for m in matches:
        if m.key == "store":
            continue
        others = tuple(o for o in matches if o is not m)
        near = dataclasses.replace(selection, matches=others).resolve()
        if near:
            values = {str(getattr(r, m.key)) for r in near if getattr(r, m.key) is not None}
            given = "|".join(str(a) for a in m.alternatives)
            hints.append(f"{m.describe()} matches none of the {len(near)} rep(s) that the other filters select; "
                         f"{m.key}: {close_matches(given, values)}")
    if not hints:
        everything = dataclasses.replace(selection, matches=tuple(m for m in matches if m.key == "store")).resolve()
        if not everything:
            hints.append("the store has no complete reps yet; write or ingest some first")
        else:
            hints.append("no two of these filters select a rep together; list the reps with db.reps() "
                         "or `actdb ls STORE reps`")
    return NotFound(f"no rep matches {_shown(matches)}: " + "; ".join(hints))


def ambiguous(matches: tuple[Any, ...], found: list[RepRecord], shown: int = 10) -> Exception:
    """The :class:`InvalidInput` of a selection that matches several reps: up to ``shown``
    of them and the fields whose values tell them apart."""
    keys = ("model", "checkpoint", "dataset", "site", "pooling", "tokenizer", "store")
    differ = []
    for key in keys:
        values = sorted({str(getattr(r, key)) for r in found})
        if len(values) > 1:
            listed = ", ".join(repr(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
            differ.append(f"{key} ({listed})")
    listing = "; ".join(f"{r.label()} dataset={r.dataset} rep_id={r.rep_id}" for r in found[:shown])
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    fix = ("add a filter on " + " or ".join(differ)) if differ else "pick one by rep_id="
    return InvalidInput(f"{_shown(matches)} matches {len(found)} reps, not one: {listing}{more}; {fix} "
                        "to select exactly one")
