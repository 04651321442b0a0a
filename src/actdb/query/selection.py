"""Selections: lazy, immutable descriptions of a set of stored reps.

``db.reps(model="pythia-*", checkpoint="step*", layer=slice(2, 6))`` builds a
:class:`Selection`; nothing is read until it is iterated (which queries the catalog
only, never an array) or compared and computed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from actdb.errors import InvalidInput
from actdb.query.filters import Match, parse_filters
from actdb.store.records import RepRecord

if TYPE_CHECKING:
    from actdb.query.handle import RepHandle
    from actdb.query.plan import Comparison
    from actdb.query.storage import Storage

def list_reps(storage: Storage, store: str = "local") -> list[RepRecord]:
    """Every complete rep of one store (the local one or an attached one), catalog only."""
    return storage.complete_reps(store)


def _value(rep: RepRecord, key: str) -> Any:
    return rep.rep_id if key == "rep_id" else getattr(rep, key)


@dataclass(frozen=True)
class Selection:
    """A lazy set of reps: filters only, resolved against the catalog when iterated."""

    storage: Storage = field(repr=False, compare=False, hash=False)
    matches: tuple[Match, ...] = ()

    @classmethod
    def build(cls, storage: Storage, filters: dict[str, Any]) -> Selection:
        return cls(storage, parse_filters(filters))

    def filter(self, **filters: Any) -> Selection:
        """A narrower selection (filters combine with AND)."""
        return replace(self, matches=self.matches + parse_filters(filters))

    @property
    def stores(self) -> tuple[str, ...]:
        for m in self.matches:
            if m.key == "store":
                names = [a for a in m.alternatives if isinstance(a, str)]
                return tuple(names)
        return ("local",)

    def resolve(self) -> list[RepRecord]:
        """The matching reps, in a stable order (model, step, layer, site). Catalog only."""
        out: list[RepRecord] = []
        for store in self.stores:
            for rep in list_reps(self.storage, store):
                if all(m.key == "store" or m(_value(rep, m.key)) for m in self.matches):
                    out.append(rep)
        return out

    def __iter__(self) -> Iterator[RepHandle]:
        """The matching reps as :class:`~actdb.query.handle.RepHandle` (each a superset of its
        :class:`RepRecord` record, with readers); catalog only, no array is opened."""
        from actdb.query.handle import RepHandle

        return iter([RepHandle(rep, self.storage) for rep in self.resolve()])

    def one(self) -> RepHandle:
        """The one matching rep, as a :class:`~actdb.query.handle.RepHandle`.

        No match: :class:`NotFound` naming the filter that excludes everything and the
        close values; several: :class:`InvalidInput` listing them (up to 10) and the fields
        that tell them apart, so one more filter picks one."""
        from actdb.query.handle import RepHandle, ambiguous, none_found

        found = self.resolve()
        if len(found) == 1:
            return RepHandle(found[0], self.storage)
        if not found:
            raise none_found(self, self.matches)
        raise ambiguous(self.matches, found)

    def __len__(self) -> int:
        return len(self.resolve())

    def __repr__(self) -> str:
        shown = ", ".join(m.describe() for m in self.matches) or "all reps"
        return f"Selection({shown})"

    def _repr_html_(self) -> str:
        from actdb.query.html import selection_html

        return selection_html(self)

    def to_xarray(self) -> Any:
        """These reps as one lazy ``xarray.DataArray``, dims ``(model?, step?, site?, layer?, row, feature)``.

        A stacking dim for each field that varies: ``model``; ``step`` (``checkpoint`` when a
        step is unknown; checkpoint names as a coordinate on ``step``); ``site`` when several
        kinds of site (``attn.*``, ``hidden.*``) and ``layer`` when several layers (when a layer is
        unknown: ``site`` by name); fields that do not vary are scalar coordinates. ``row``
        carries ``example`` (and ``position`` for token-level reps); attrs: dataset, pooling,
        dtype. Dask-backed: nothing is read until values are computed, and a slice
        (``.sel(layer=3).values``) reads only its chunks.

        The reps must share one row space (dataset, pooling, token table, row count) and fill a
        full grid, else :class:`InvalidInput` says what to filter. Several widths give an
        ``xarray.Dataset`` instead: one variable per width (named by model when each width is one
        model, else ``width_D``), its feature dim ``feature_D``. Needs ``pip install 'actdb[xarray]'``.
        """
        from actdb.query.xarray_view import to_xarray

        return to_xarray(self.storage, self.resolve())

    def dataloader(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, label: str | None = None,
                   columns: Any = None, buffer_rows: int = 1 << 14, num_workers: int = 0, drop_last: bool = False,
                   dtype: Any = "float32", pin_memory: bool = False) -> Any:
        """A ``torch.utils.data.DataLoader`` of shuffled row batches of these reps (one row space).

        Each batch is ``{key: tensor (batch_size, d)}``, one entry per rep (keyed by site, or by
        ``model/checkpoint/site`` when sites repeat), the same rows in every entry; ``label="label"``
        (or ``"split"``) adds ``"label"``: int64 class indices into ``loader.dataset.classes``;
        ``columns=("example", "position")`` adds those token columns. Shuffling permutes the stored
        chunks, then rows inside a buffer of ``buffer_rows`` rows (memory independent of n);
        the order depends on ``seed`` and ``loader.dataset.set_epoch(k)`` only. Workers split
        the chunks: each row once per epoch. See :mod:`actdb.query.loader`.
        """
        from actdb.query.loader import dataloader

        return dataloader(self, batch_size, shuffle=shuffle, seed=seed, label=label, columns=columns,
                          buffer_rows=buffer_rows, num_workers=num_workers, drop_last=drop_last, dtype=dtype,
                          pin_memory=pin_memory)

    def probe(self, label: str = "label", method: str = "ridge", folds: int = 5, *, ridge: float = 1e-3,
              sample: int = 4096, seed: int = 0, shuffle: bool = False, C: float = 1.0,
              subset: str | None = None, recompute: bool = False) -> Any:
        """Cross-validated linear probes of an example column, one per rep: a ``pandas.DataFrame``
        (rep_id, model, checkpoint, step, site, layer, dataset, label, method, accuracy, n, folds,
        cached). ``method="ridge"`` comes from streaming moments (memory independent of n;
        penalty ``ridge · trace(XᵀX)/d``); ``"logistic"`` fits scikit-learn on ``sample`` seeded
        rows. Folds are of examples (contiguous, or seeded with ``shuffle=True``). Cached; in SQL
        as the ``probes`` view. See :mod:`actdb.query.probe`."""
        from actdb.query.probe import check_params
        from actdb.query.probe import probe as run_probe

        params = check_params(label, method, folds, ridge=ridge, sample=sample, seed=seed, shuffle=shuffle, C=C,
                              subset=subset)
        return run_probe(self.storage, self.resolve(), params, recompute=recompute)

    def compare(self, other: Selection | None = None, *, measure: str | list[str] | tuple[str, ...] = "linear_cka",
                pairs: str = "all", subset: str | None = None, align: str | None = None,
                reference: str | None = None, stderr: bool = False, include_reference: bool = False,
                **params: Any) -> Comparison:
        """A lazy comparison plan between this selection and ``other`` (or itself).

        ``pairs``: ``all`` (cross product), ``same_layer``, ``zip``, ``consecutive``
        (checkpoint t vs t+1 of the same model and site), ``to_reference`` (each
        checkpoint vs ``reference``; also ``"to_reference:NAME"``). The default reference of
        each model is its checkpoint named ``final`` when it has one, else its checkpoint
        with the highest step. ``include_reference=True`` adds each reference compared with
        itself (its own point on a trajectory: 1 for a similarity, 0 for a distance).
        ``measure``: one name or several (they share one pass over the data).
        ``subset``: a SQL predicate over token/example columns; ``align``:
        ``example:mean|first|last`` or ``word`` for reps with different tokenizers.
        ``stderr=True``: each value also gets a delete-one-shard jackknife standard error
        over 20 contiguous row shards (moments-route measures only), as
        ``measure(X, Y, stderr=True)`` computes it.
        """
        from actdb.query.plan import Comparison

        if other is not None and not isinstance(other, Selection):
            raise InvalidInput(f"compare() takes another Selection, not {type(other).__name__}")
        measures = (measure,) if isinstance(measure, str) else tuple(measure)
        return Comparison.build(self, other, measures=measures, pairs=pairs, subset=subset, align=align,
                                reference=reference, params=params, stderr=stderr,
                                include_reference=include_reference)
