"""The ``result``, ``foreign_rep`` and ``measure_default`` tables: the cache of computed values.

Keys are plain tuples ``(measure, params_hash, rep_a, rep_b, subset_hash)`` whose rep ids are
ids in THIS catalog: a local rep's own id, ``-foreign_rep.id`` for a rep of an attached store
(see :meth:`ResultRepository.rep_ids`). The query layer builds the keys and the values; this
is the one place their rows are read and written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from actdb.store import schema as S
from actdb.store.catalog import Catalog
from actdb.store.clock import now
from actdb.store.records import RepRecord, ResultValue

BATCH = 500  # rep ids per IN (...) list

ResultKey = tuple[str, str, int, int, str]


class ResultRepository:
    """Cached measure values of one store's catalog."""

    def __init__(self, catalog: Catalog, version: str):
        self.catalog = catalog
        self.version = version  # actdb's version, recorded with every value

    def rep_ids(self, reps: Iterable[RepRecord], uris: Mapping[str, str], *,
                create: bool) -> dict[tuple[str, int], int]:
        """The id each rep has in this catalog's ``result`` table: its own id for a local rep,
        ``-foreign_rep.id`` for a rep of an attached store (whose location ``uris`` gives;
        registered when ``create``). A foreign rep not registered yet is left out."""
        out: dict[tuple[str, int], int] = {}
        foreign = []
        for rep in reps:
            if rep.store == "local":
                out[rep.key] = rep.id
            else:
                foreign.append(rep)
        if not foreign:
            return out
        f = S.foreign_rep.c
        with self.catalog.connect(write=create) as conn:
            for rep in foreign:
                where = (f.store_uri == uris[rep.store], f.remote_rep_id == rep.id, f.checksum == rep.checksum)
                fid = conn.execute(sa.select(f.id).where(*where)).scalar()
                if fid is None and create:
                    conn.execute(S.foreign_rep.insert().values(
                        store_uri=uris[rep.store], remote_rep_id=rep.id, checksum=rep.checksum, model=rep.model,
                        checkpoint=rep.checkpoint, step=rep.step, dataset=rep.dataset, site=rep.site,
                        layer=rep.layer, pooling=rep.pooling, created_at=now()))
                    fid = conn.execute(sa.select(f.id).where(*where)).scalar()
                if fid is not None:
                    out[rep.key] = -int(fid)
        return out

    def lookup(self, keys: Iterable[ResultKey]) -> dict[ResultKey, ResultValue]:
        """The stored values of ``keys`` (those stored)."""
        wanted = set(keys)
        if not wanted:
            return {}
        rep_ids = sorted({k[2] for k in wanted})
        r = S.result.c
        out: dict[ResultKey, ResultValue] = {}
        with self.catalog.connect() as conn:
            for start in range(0, len(rep_ids), BATCH):
                rows = conn.execute(sa.select(r.measure, r.params_hash, r.rep_a, r.rep_b, r.subset_hash, r.value,
                                              r.n, r.seconds, r.extra, r.stderr)
                                    .where(r.rep_a.in_(rep_ids[start: start + BATCH]))).mappings()
                for row in rows:
                    key = (row["measure"], row["params_hash"], row["rep_a"], row["rep_b"], row["subset_hash"])
                    if key not in wanted:
                        continue
                    extra = json.loads(row["extra"]) if row["extra"] else {}
                    out[key] = ResultValue(value=row["value"], n=row["n"], route=extra.get("route", "cached"),
                                           seconds=row["seconds"] or 0.0, extra=extra, stderr=row["stderr"])
        return out

    def put(self, rows: Sequence[tuple[ResultKey, ResultValue, dict[str, Any]]]) -> None:
        """Insert values (``(key, value, about)``; ``about`` has ``kind``, ``params`` and
        ``subset`` text), skipping keys another writer stored first; a stored value that
        lacks the standard error now given gains it in place."""
        if not rows:
            return
        at = now()
        r = S.result.c
        with self.catalog.connect(write=True) as conn:
            existing: dict[tuple[Any, ...], Any] = {}
            rep_ids = sorted({k[2] for k, _, _ in rows})
            for start in range(0, len(rep_ids), BATCH):
                found = conn.execute(sa.select(r.measure, r.params_hash, r.rep_a, r.rep_b, r.subset_hash, r.id,
                                               r.stderr).where(r.rep_a.in_(rep_ids[start: start + BATCH]))).all()
                existing.update({tuple(row[:5]): row for row in found})
            records, updates = [], []
            for key, v, about in rows:
                extra_text = json.dumps({**(v.extra or {}), "route": v.route}, sort_keys=True, default=str)
                old = existing.get(key)
                if old is not None:
                    if old[6] is None and v.stderr is not None:
                        updates.append({"_id": old[5], "_value": float(v.value), "_stderr": float(v.stderr),
                                        "_n": v.n, "_extra": extra_text, "_at": at})
                    continue
                existing[key] = (*key, None, v.stderr)
                records.append(dict(
                    measure=key[0], kind=about["kind"], params_hash=key[1],
                    params=json.dumps(about["params"], sort_keys=True), rep_a=key[2], rep_b=key[3],
                    subset_hash=key[4], subset=about.get("subset"), value=float(v.value), stderr=v.stderr,
                    n=v.n, seconds=v.seconds, extra=extra_text, actdb_version=self.version, computed_at=at))
            if records:
                conn.execute(S.result.insert(), records)
            if updates:
                conn.execute(S.result.update().where(r.id == sa.bindparam("_id")).values(
                    value=sa.bindparam("_value"), stderr=sa.bindparam("_stderr"), n=sa.bindparam("_n"),
                    extra=sa.bindparam("_extra"), computed_at=sa.bindparam("_at")), updates)

    def sync_defaults(self, defaults: Mapping[str, tuple[str, dict[str, Any], bool]]) -> None:
        """Keep ``measure_default`` current: measure -> (default params hash, defaults, symmetric)."""
        if not defaults:
            return
        d = S.measure_default.c
        with self.catalog.connect(write=True) as conn:
            have = {row[0]: (row[1], row[2]) for row in conn.execute(sa.select(d.measure, d.params_hash,
                                                                               d.is_symmetric))}
            for name in sorted(defaults):
                phash, params, symmetric = defaults[name]
                if have.get(name) == (phash, bool(symmetric)):
                    continue
                if name in have:
                    conn.execute(S.measure_default.delete().where(d.measure == name))
                conn.execute(S.measure_default.insert().values(
                    measure=name, params_hash=phash, params=json.dumps(params, sort_keys=True, default=str),
                    is_symmetric=bool(symmetric)))
