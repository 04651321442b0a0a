"""The catalog caches of the query layer: measure values (``result``) and per-rep moments.

- ``result``: one value per (measure, params hash, rep a, rep b, row-space hash); a cached
  value is never recomputed unless asked (``recompute=True``, or ``stderr=True`` for a value
  stored without one, which then gains its standard error in place).
- ``rep_moments``: each rep's own second moments (a one-rep
  :class:`~actdb.query.moments.Moments`) per row space, keyed by (rep, checksum, row-space
  hash, n); the row holds the key, the numbers a Zarr group beside the arrays
  (``moments/NNNNNNNNN``, see :mod:`actdb.store.moments_files`). A later plan that needs the rep's diagonal block takes it from here instead of
  accumulating it again, so adding a model to a comparison costs only the new model's
  blocks and the cross terms.
- ``measure_default``: each measure's default-parameter hash, kept current whenever values
  are stored (the lookup-only SQL function ``dissim()`` of a PostgreSQL catalog reads it).

Reps of attached stores are registered in ``foreign_rep`` and appear here as ``-id``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from actdb._version import __version__
from actdb.errors import InvalidInput
from actdb.query.measures import REGISTRY, get_measure
from actdb.query.moments import Moments
from actdb.query.plan import RowSpace, Task, params_hash
from actdb.query.selection import Rep
from actdb.store import schema as S

if TYPE_CHECKING:
    from actdb.database import Database

_BATCH = 500
_MOMENTS_SEQ = sa.Sequence("rep_moments_id_seq")


@dataclass(frozen=True)
class Value:
    value: float
    n: int
    route: str
    seconds: float
    extra: dict[str, Any] | None = None
    stderr: float | None = None


# ------------------------------------------------------------------------ rep ids
def catalog_ids(db: Database, reps: Sequence[Rep], *, create: bool) -> dict[tuple[str, int], int]:
    """The id each rep has in this store's ``result`` table: its own id for a local rep,
    ``-foreign_rep.id`` for a rep of an attached store (registered when ``create``)."""
    out: dict[tuple[str, int], int] = {}
    foreign = []
    for rep in reps:
        if rep.store == "local":
            out[rep.key] = rep.rep_id
        else:
            foreign.append(rep)
    if not foreign:
        return out
    with db.catalog.connect(write=create) as conn:
        for rep in foreign:
            uri = str(db.store_handle(rep.store).path)
            where = (S.foreign_rep.c.store_uri == uri, S.foreign_rep.c.remote_rep_id == rep.rep_id,
                     S.foreign_rep.c.checksum == rep.checksum)
            fid = conn.execute(sa.select(S.foreign_rep.c.id).where(*where)).scalar()
            if fid is None and create:
                conn.execute(S.foreign_rep.insert().values(
                    store_uri=uri, remote_rep_id=rep.rep_id, checksum=rep.checksum, model=rep.model,
                    checkpoint=rep.checkpoint, step=rep.step, dataset=rep.dataset, site=rep.site, layer=rep.layer,
                    pooling=rep.pooling, created_at=_now()))
                fid = conn.execute(sa.select(S.foreign_rep.c.id).where(*where)).scalar()
            if fid is not None:
                out[rep.key] = -int(fid)
    return out


def _db_key(key: tuple[Any, ...], ids: dict[tuple[str, int], int]) -> tuple[Any, ...] | None:
    a, b = ids.get(key[2]), ids.get(key[3])
    return None if a is None or b is None else (key[0], key[1], a, b, key[4])


def _unique_reps(tasks: Iterable[Task]) -> list[Rep]:
    return list({r.key: r for t in tasks for r in (t.a, t.b)}.values())


# ------------------------------------------------------------------------ results
def cached_values(db: Database, tasks: Sequence[Task], *, stderr: bool = False) -> dict[tuple[Any, ...], Value]:
    """Cached values of the tasks, by cache key (catalog only). With ``stderr`` a value
    stored without a standard error counts as missing (moments-route measures only)."""
    if not tasks:
        return {}
    ids = catalog_ids(db, _unique_reps(tasks), create=False)
    wanted = {}
    for t in tasks:
        k = _db_key(t.cache_key, ids)
        if k is not None:
            wanted[k] = t.cache_key
    if not wanted:
        return {}
    rep_ids = sorted({k[2] for k in wanted})
    out: dict[tuple[Any, ...], Value] = {}
    r = S.result.c
    with db.catalog.connect() as conn:
        for start in range(0, len(rep_ids), _BATCH):
            rows = conn.execute(sa.select(r.measure, r.params_hash, r.rep_a, r.rep_b, r.subset_hash, r.value, r.n,
                                          r.seconds, r.extra, r.stderr)
                                .where(r.rep_a.in_(rep_ids[start: start + _BATCH]))).all()
            for row in rows:
                key = wanted.get((row[0], row[1], row[2], row[3], row[4]))
                if key is None or (stderr and row[9] is None and get_measure(row[0]).route == "moments"):
                    continue
                extra = json.loads(row[8]) if row[8] else {}
                out[key] = Value(row[5], row[6], extra.get("route", "cached"), row[7] or 0.0, extra, row[9])
    return out


def store_values(db: Database, computed: dict[tuple[Any, ...], tuple[Task, Value]]) -> None:
    """Insert computed values into ``result`` (skipping keys another writer stored first);
    a stored value that lacks the standard error now computed gains it in place."""
    if not computed or db.read_only:
        return
    now = _now()
    with db.catalog.session():
        ids = catalog_ids(db, _unique_reps(t for t, _ in computed.values()), create=True)
        local = {_db_key(k, ids): tv for k, tv in computed.items()}
        r = S.result.c
        with db.catalog.connect(write=True) as conn:
            existing: dict[tuple[Any, ...], Any] = {}
            rep_ids = sorted({k[2] for k in local if k is not None})
            for start in range(0, len(rep_ids), _BATCH):
                rows = conn.execute(sa.select(r.measure, r.params_hash, r.rep_a, r.rep_b, r.subset_hash, r.id,
                                              r.stderr).where(r.rep_a.in_(rep_ids[start: start + _BATCH]))).all()
                existing.update({tuple(row[:5]): row for row in rows})
            records, updates = [], []
            for key, (task, v) in local.items():
                if key is None:
                    continue
                extra = dict(v.extra or {})
                extra["route"] = v.route
                extra_text = json.dumps(extra, sort_keys=True, default=str)
                old = existing.get(key)
                if old is not None:
                    if old[6] is None and v.stderr is not None:
                        updates.append({"_id": old[5], "_value": float(v.value), "_stderr": float(v.stderr),
                                        "_n": v.n, "_extra": extra_text, "_at": now})
                    continue
                records.append(dict(
                    measure=task.measure, kind=get_measure(task.measure).kind, params_hash=key[1],
                    params=json.dumps(task.params_dict, sort_keys=True), rep_a=key[2], rep_b=key[3],
                    subset_hash=key[4], subset=subset_text(task.space), value=float(v.value), stderr=v.stderr,
                    n=v.n, seconds=v.seconds, extra=extra_text, actdb_version=__version__, computed_at=now))
            if records:
                conn.execute(S.result.insert(), records)
            if updates:
                conn.execute(S.result.update().where(r.id == sa.bindparam("_id")).values(
                    value=sa.bindparam("_value"), stderr=sa.bindparam("_stderr"), n=sa.bindparam("_n"),
                    extra=sa.bindparam("_extra"), computed_at=sa.bindparam("_at")), updates)
            _sync_defaults(conn, {t.measure for t, _ in local.values()})


def _sync_defaults(conn: sa.Connection, measures: set[str]) -> None:
    """Keep ``measure_default`` current for the measures just stored."""
    d = S.measure_default.c
    have = {row[0]: (row[1], row[2]) for row in conn.execute(sa.select(d.measure, d.params_hash, d.is_symmetric))}
    for name in sorted(measures):
        spec = REGISTRY.get(name)
        if spec is None:
            continue
        defaults = spec.resolve_params({})
        want = (params_hash(defaults), bool(spec.symmetric))
        if have.get(name) == want:
            continue
        if name in have:
            conn.execute(S.measure_default.delete().where(d.measure == name))
        conn.execute(S.measure_default.insert().values(
            measure=name, params_hash=want[0], params=json.dumps(defaults, sort_keys=True, default=str),
            is_symmetric=want[1]))


def subset_text(space: RowSpace) -> str | None:
    parts = [p for p in (space.subset and f"where {space.subset}", space.align and f"align {space.align}") if p]
    return "; ".join(parts) or None


def _now() -> Any:
    from actdb.store.store import now

    return now()


# ------------------------------------------------------------------ per-rep moments
def rep_cacheable(space: RowSpace) -> bool:
    """Whether a rep's rows in ``space`` depend on the rep alone (not with ``align='word'``,
    whose rows are the words every rep of the plan shares)."""
    return space.align != "word"


def _rep_key(rep: Rep, ids: dict[tuple[str, int], int], space: RowSpace, n: int) -> tuple[Any, ...] | None:
    rid = ids.get(rep.key)
    return None if rid is None else (rid, rep.checksum, space.hash, int(n))


def cached_rep_keys(db: Database, reps: Sequence[Rep], space: RowSpace, n: int) -> set[tuple[str, int]]:
    """Keys of the reps whose own moments over ``n`` rows of ``space`` are cached (reads
    only the key columns)."""
    return set(_load(db, reps, space, n, data=False))


def load_rep_moments(db: Database, reps: Sequence[Rep], space: RowSpace, n: int) -> dict[tuple[str, int], Moments]:
    """Cached one-rep :class:`Moments` of ``reps`` over ``n`` rows of ``space``, by rep key."""
    return {k: unpack(v) for k, v in _load(db, reps, space, n, data=True).items()}


def _load(db: Database, reps: Sequence[Rep], space: RowSpace, n: int, *, data: bool) -> dict[tuple[str, int], Any]:
    """Cached moments of ``reps`` by rep key: their arrays (``data``) or True. A row whose
    group beside the arrays is missing (``data=False``: not written completely; ``data=True``:
    also damaged) is a cache miss; with ``data`` it is deleted too, to be recomputed."""
    if not reps or not rep_cacheable(space):
        return {}
    ids = catalog_ids(db, reps, create=False)
    wanted = {k: rep.key for rep in reps if (k := _rep_key(rep, ids, space, n)) is not None}
    if not wanted:
        return {}
    c = S.rep_moments.c
    found: dict[tuple[str, int], int] = {}
    rids = sorted({k[0] for k in wanted})
    with db.catalog.connect() as conn:
        for start in range(0, len(rids), _BATCH):
            rows = conn.execute(sa.select(c.rep_id, c.checksum, c.space_hash, c.n, c.id).where(
                c.rep_id.in_(rids[start: start + _BATCH]), c.space_hash == space.hash, c.n == int(n))).all()
            for row in rows:
                key = wanted.get((row[0], row[1], row[2], row[3]))
                if key is not None:
                    found[key] = int(row[4])
    files = db.moment_files
    out: dict[tuple[str, int], Any] = {}
    dead: list[int] = []
    for key, row_id in found.items():
        value = files.read(row_id) if data else files.exists(row_id)
        if value is None or value is False:
            dead.append(row_id)
        else:
            out[key] = value
    if dead and data and not db.read_only:
        with db.catalog.connect(write=True) as conn:
            files.drop_rows(conn, c.id.in_(dead))
    return out


def store_rep_moments(db: Database, singles: dict[tuple[str, int], tuple[Rep, Moments]], space: RowSpace) -> None:
    """Cache one-rep moments (skipping keys already stored): the numbers go to a Zarr group
    beside the arrays first (named after a fresh ``rep_moments`` id), the catalog row after,
    so a row never points at data that was not written. A stored row whose group is gone is
    replaced."""
    if not singles or db.read_only or not rep_cacheable(space):
        return
    now = _now()
    files = db.moment_files
    with db.catalog.session():
        ids = catalog_ids(db, [rep for rep, _ in singles.values()], create=True)
        c = S.rep_moments.c
        with db.catalog.connect(write=True) as conn:
            have: dict[tuple[Any, ...], int] = {}
            rids = sorted(ids.values())
            for start in range(0, len(rids), _BATCH):
                have |= {tuple(row[:4]): int(row[4]) for row in conn.execute(
                    sa.select(c.rep_id, c.checksum, c.space_hash, c.n, c.id).where(
                        c.rep_id.in_(rids[start: start + _BATCH]), c.space_hash == space.hash))}
            todo: list[tuple[tuple[Any, ...], Moments, int]] = []
            dead: list[int] = []
            seen: set[tuple[Any, ...]] = set()
            for rep, m in singles.values():
                key = _rep_key(rep, ids, space, m.n)
                if key is None or key in seen:
                    continue
                seen.add(key)
                if key in have:
                    if files.exists(have[key]):
                        continue
                    dead.append(have[key])
                row_id = int(conn.execute(sa.select(_MOMENTS_SEQ.next_value())).scalar_one())
                todo.append((key, m, row_id))
        if not todo:
            return
        written: list[int] = []
        try:
            records = []
            for key, m, row_id in todo:
                written.append(row_id)
                nbytes = files.write(row_id, pack(m))
                records.append(dict(id=row_id, rep_id=key[0], checksum=key[1], space_hash=key[2], n=key[3],
                                    dim=m.dims[0], nbytes=nbytes, actdb_version=__version__, computed_at=now))
            with db.catalog.connect(write=True) as conn:
                if dead:
                    files.drop_rows(conn, c.id.in_(dead))
                conn.execute(S.rep_moments.insert(), records)
        except BaseException:
            for row_id in written:  # no row points at them: remove rather than leave orphans
                files.delete(row_id)
            raise


def pack(m: Moments) -> dict[str, np.ndarray]:
    """A one-rep :class:`Moments` as named arrays, its symmetric block as the upper triangle
    (what a moments group beside the arrays holds)."""
    if m.n_reps != 1:
        raise InvalidInput(f"the per-rep cache holds one-rep Moments, got {m.n_reps} reps")
    arrays = m.to_arrays()
    block = arrays.pop("block_0_0")
    arrays["block_0_0_upper"] = block[np.triu_indices(block.shape[0])]
    return arrays


def unpack(data: dict[str, np.ndarray]) -> Moments:
    """Invert :func:`pack`."""
    arrays = dict(data)
    try:
        upper = arrays.pop("block_0_0_upper")
    except KeyError:
        raise InvalidInput("not a cached per-rep Moments (no block_0_0_upper); drop the rep_moments row") from None
    d = int(arrays["dims"][0])
    block = np.zeros((d, d))
    block[np.triu_indices(d)] = upper
    arrays["block_0_0"] = block + np.triu(block, 1).T
    # stored from a settled accumulator (centred on its exact mean): read as it is, never
    # re-centred, so a value is bitwise the same whether its rep's moments came from here
    return Moments.from_arrays(arrays).assume_settled()
