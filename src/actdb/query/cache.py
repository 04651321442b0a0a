"""The query layer's caches: measure values and per-rep moments, keyed by what they depend on.

- values: one per (measure, params hash, rep a, rep b, row-space hash); a cached value is
  never recomputed unless asked (``recompute=True``, or ``stderr=True`` for a value stored
  without one, which then gains its standard error in place).
- per-rep moments: each rep's own second moments (a one-rep
  :class:`~actdb.query.moments.Moments`) per row space, keyed by (rep, checksum, row-space
  hash, n). A later plan that needs the rep's diagonal block takes it from here instead of
  accumulating it again, so adding a model to a comparison costs only the new model's
  blocks and the cross terms.

This module builds the keys and (de)serialises; the storage (:class:`~actdb.query.storage.Storage`)
keeps the rows. Reps of attached stores have negative ids in the local catalog.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from actdb.errors import InvalidInput
from actdb.query.measures import REGISTRY, get_measure
from actdb.query.moments import Moments
from actdb.query.storage import Storage
from actdb.query.tasks import RowSpace, Task, params_hash
from actdb.store.records import RepRecord, ResultValue

Value = ResultValue  # the executor's name for a computed value


def _db_key(key: tuple[Any, ...], ids: dict[tuple[str, int], int]) -> tuple[Any, ...] | None:
    a, b = ids.get(key[2]), ids.get(key[3])
    return None if a is None or b is None else (key[0], key[1], a, b, key[4])


def _unique_reps(tasks: Iterable[Task]) -> list[RepRecord]:
    return list({r.key: r for t in tasks for r in (t.a, t.b)}.values())


# ------------------------------------------------------------------------ results
def cached_values(storage: Storage, tasks: Sequence[Task], *, stderr: bool = False) -> dict[tuple[Any, ...], Value]:
    """Cached values of the tasks, by cache key (catalog only). With ``stderr`` a value
    stored without a standard error counts as missing (moments-route measures only)."""
    if not tasks:
        return {}
    ids = storage.result_ids(_unique_reps(tasks), create=False)
    wanted: dict[Any, tuple[Any, ...]] = {}
    for t in tasks:
        k = _db_key(t.cache_key, ids)
        if k is not None:
            wanted[k] = t.cache_key
    found = storage.cached_values(list(wanted))
    return {wanted[k]: v for k, v in found.items()
            if not (stderr and v.stderr is None and get_measure(k[0]).route == "moments")}


def store_values(storage: Storage, computed: dict[tuple[Any, ...], tuple[Task, Value]]) -> None:
    """Store computed values (skipping keys another writer stored first); a stored value
    that lacks the standard error now computed gains it in place."""
    if not computed or storage.read_only:
        return
    with storage.session():
        ids = storage.result_ids(_unique_reps(t for t, _ in computed.values()), create=True)
        rows = []
        for key, (task, v) in computed.items():
            k = _db_key(key, ids)
            if k is not None:
                rows.append((k, v, {"kind": get_measure(task.measure).kind, "params": task.params_dict,
                                    "subset": subset_text(task.space)}))
        storage.store_values(rows, _defaults({t.measure for t, _ in computed.values()}))


def _defaults(measures: set[str]) -> dict[str, tuple[str, dict[str, Any], bool]]:
    """Each measure's default parameters (hash, values, symmetric), for ``measure_default``."""
    out = {}
    for name in sorted(measures):
        spec = REGISTRY.get(name)
        if spec is not None:
            defaults = spec.resolve_params({})
            out[name] = (params_hash(defaults), defaults, bool(spec.symmetric))
    return out


def subset_text(space: RowSpace) -> str | None:
    parts = [p for p in (space.subset and f"where {space.subset}", space.align and f"align {space.align}") if p]
    return "; ".join(parts) or None


# ------------------------------------------------------------------ per-rep moments
def rep_cacheable(space: RowSpace) -> bool:
    """Whether a rep's rows in ``space`` depend on the rep alone (not with ``align='word'``,
    whose rows are the words every rep of the plan shares)."""
    return space.align != "word"


def _rep_key(rep: RepRecord, ids: dict[tuple[str, int], int], space: RowSpace, n: int) -> Any:
    rid = ids.get(rep.key)
    return None if rid is None else (rid, rep.checksum, space.hash, int(n))


def _keys(storage: Storage, reps: Sequence[RepRecord], space: RowSpace, n: int, *,
          create: bool) -> dict[Any, tuple[str, int]]:
    if not reps or not rep_cacheable(space):
        return {}
    ids = storage.result_ids(list(reps), create=create)
    return {k: rep.key for rep in reps if (k := _rep_key(rep, ids, space, n)) is not None}


def cached_rep_keys(storage: Storage, reps: Sequence[RepRecord], space: RowSpace, n: int) -> set[tuple[str, int]]:
    """Keys of the reps whose own moments over ``n`` rows of ``space`` are cached (reads
    only the key columns)."""
    wanted = _keys(storage, reps, space, n, create=False)
    return {wanted[k] for k in storage.load_rep_moments(list(wanted), data=False)}


def load_rep_moments(storage: Storage, reps: Sequence[RepRecord], space: RowSpace,
                     n: int) -> dict[tuple[str, int], Moments]:
    """Cached one-rep :class:`Moments` of ``reps`` over ``n`` rows of ``space``, by rep key
    (a damaged cache entry is a miss, dropped to be recomputed)."""
    wanted = _keys(storage, reps, space, n, create=False)
    return {wanted[k]: unpack(v) for k, v in storage.load_rep_moments(list(wanted), data=True).items()}


def store_rep_moments(storage: Storage, singles: dict[tuple[str, int], tuple[RepRecord, Moments]],
                      space: RowSpace) -> None:
    """Cache one-rep moments (skipping keys already stored; a stored row whose data is gone
    is replaced)."""
    if not singles or storage.read_only or not rep_cacheable(space):
        return
    with storage.session():
        ids = storage.result_ids([rep for rep, _ in singles.values()], create=True)
        items = []
        for rep, m in singles.values():
            key = _rep_key(rep, ids, space, m.n)
            if key is not None:
                items.append((key, pack(m), m.dims[0]))
        storage.store_rep_moments(items)


def pack(m: Moments) -> dict[str, np.ndarray]:
    """A one-rep :class:`Moments` of a settled accumulator (:meth:`Moments.rep`) in the one
    serialised form (:mod:`actdb.query.moments.serialise`), its exactly symmetric block as
    the upper triangle: what a moments group beside the arrays holds."""
    if m.n_reps != 1:
        raise InvalidInput(f"the per-rep cache holds one-rep Moments, got {m.n_reps} reps")
    return m.to_arrays(symmetric=True)


def unpack(data: dict[str, np.ndarray]) -> Moments:
    """Invert :func:`pack`. Stored from a settled accumulator (centred on its exact mean): read
    as it is, never re-centred, so a value is bitwise the same whether its rep's moments came
    from here."""
    m = Moments.from_arrays(data)
    if m.n_reps != 1 or (0, 0) not in m.blocks:
        raise InvalidInput("not a cached per-rep Moments (one rep and its block); drop the rep_moments row")
    return m.assume_settled()
