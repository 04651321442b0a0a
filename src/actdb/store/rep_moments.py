"""The ``rep_moments`` table and its groups beside the arrays: each rep's cached own moments.

Keys are ``(rep id in this catalog, rep checksum, row-space hash, n)``; the numbers are a
dict of named arrays (the query layer's serialisation of a one-rep accumulator), kept in a
Zarr group beside the arrays (:mod:`actdb.store.moments_files`). Files are written before
the catalog row and removed after it, so a row never points at data never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from actdb.store import schema as S
from actdb.store.catalog import Catalog
from actdb.store.clock import now
from actdb.store.moments_files import MomentFiles

BATCH = 500
_SEQ = sa.Sequence("rep_moments_id_seq")

MomentsKey = tuple[int, str, str, int]  # (rep id, checksum, space hash, n)


class RepMomentsRepository:
    """Per-rep moments of one store."""

    def __init__(self, catalog: Catalog, files: MomentFiles, *, read_only: bool, version: str):
        self.catalog = catalog
        self.files = files
        self.read_only = read_only
        self.version = version

    def _rows(self, conn: sa.Connection, rep_ids: Sequence[int], space_hash: str,
              n: int | None = None) -> dict[MomentsKey, int]:
        c = S.rep_moments.c
        out: dict[MomentsKey, int] = {}
        ids = sorted(set(rep_ids))
        for start in range(0, len(ids), BATCH):
            q = sa.select(c.rep_id, c.checksum, c.space_hash, c.n, c.id).where(
                c.rep_id.in_(ids[start: start + BATCH]), c.space_hash == space_hash)
            if n is not None:
                q = q.where(c.n == int(n))
            out |= {(int(r[0]), r[1], r[2], int(r[3])): int(r[4]) for r in conn.execute(q)}
        return out

    def load(self, keys: Sequence[MomentsKey], *, data: bool) -> dict[MomentsKey, Any]:
        """Cached moments of ``keys`` (all of one space hash and n): their arrays (``data``)
        or True. A row whose group is missing (``data=False``: not written completely;
        ``data=True``: also damaged) is a miss; with ``data`` it is deleted, to be recomputed."""
        if not keys:
            return {}
        with self.catalog.connect() as conn:
            found = self._rows(conn, [k[0] for k in keys], keys[0][2], keys[0][3])
        out: dict[MomentsKey, Any] = {}
        dead: list[int] = []
        for key in set(keys):
            row_id = found.get(key)
            if row_id is None:
                continue
            value = self.files.read(row_id) if data else self.files.exists(row_id)
            if value is None or value is False:
                dead.append(row_id)
            else:
                out[key] = value
        if dead and data and not self.read_only:
            with self.catalog.connect(write=True) as conn:
                self.files.drop_rows(conn, S.rep_moments.c.id.in_(dead))
        return out

    def store(self, items: Sequence[tuple[MomentsKey, dict[str, np.ndarray], int]]) -> None:
        """Cache ``(key, arrays, dim)`` items of one space hash (skipping keys stored already;
        a stored row whose group is gone is replaced)."""
        if not items or self.read_only:
            return
        at = now()
        c = S.rep_moments.c
        with self.catalog.connect(write=True) as conn:
            have = self._rows(conn, [k[0] for k, _, _ in items], items[0][0][2])
            todo: list[tuple[MomentsKey, dict[str, np.ndarray], int, int]] = []
            dead: list[int] = []
            seen: set[MomentsKey] = set()
            for key, arrays, dim in items:
                if key in seen:
                    continue
                seen.add(key)
                if key in have:
                    if self.files.exists(have[key]):
                        continue
                    dead.append(have[key])
                todo.append((key, arrays, dim, int(conn.execute(sa.select(_SEQ.next_value())).scalar_one())))
        if not todo:
            return
        written: list[int] = []
        try:
            records = []
            for key, arrays, dim, row_id in todo:
                written.append(row_id)
                nbytes = self.files.write(row_id, arrays)
                records.append(dict(id=row_id, rep_id=key[0], checksum=key[1], space_hash=key[2], n=key[3],
                                    dim=dim, nbytes=nbytes, actdb_version=self.version, computed_at=at))
            with self.catalog.connect(write=True) as conn:
                if dead:
                    self.files.drop_rows(conn, c.id.in_(dead))
                conn.execute(S.rep_moments.insert(), records)
        except BaseException:
            for row_id in written:  # no row points at them: remove rather than leave orphans
                self.files.delete(row_id)
            raise
