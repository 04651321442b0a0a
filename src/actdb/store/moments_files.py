"""Cached per-rep moments beside the rep arrays: one Zarr group per ``rep_moments`` row.

The catalog row (``rep_moments``) holds only the key and metadata; the numbers live in the
store's Zarr root at ``moments/NNNNNNNNN`` (:func:`~actdb.store.arrays.moments_path`, from the
row's id only, never from a user-supplied name). A group holds the named arrays it is given,
as given: the query layer hands it moments in their one serialised form
(:mod:`actdb.query.moments.serialise`; the store reads no key of it). Each array of a group
is one uncompressed chunk (float64 statistics hardly compress); 0-d values (counts,
versions, names) are group attributes. The attribute ``actdb_moments`` is written last and
records every array's shape, dtype and CRC-32: a group without it (a crash mid-write), or
whose arrays disagree with it, is damaged and reads as missing, so a cache reader
recomputes instead of returning a wrong value. Writers write the files first and insert the
catalog row after, so a row never points at files that were never written; deleting is the
reverse (row, then files).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import zarr
import zarr.storage

from actdb.errors import InvalidInput
from actdb.store import arrays as A
from actdb.store import schema as S

MARK = "actdb_moments"


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).tobytes())


def write_moments(root: zarr.storage.StoreLike, row_id: int, arrays: dict[str, np.ndarray]) -> int:
    """Write ``arrays`` as the group of row ``row_id`` (replacing any leftover there); the
    bytes of the values written."""
    path = A.moments_path(row_id)
    A.delete_array(root, path)  # a leftover of a crashed write under a reused id
    group = zarr.open_group(store=root, path=path, mode="w", zarr_format=3)
    scalars: dict[str, Any] = {}
    index: dict[str, Any] = {}
    nbytes = 0
    for name, value in arrays.items():
        a = np.asarray(value)
        if a.ndim == 0:
            scalars[name] = a.item()
            continue
        if a.dtype.kind not in "fiu":
            raise InvalidInput(f"moments array {name!r} has dtype {a.dtype}; only numbers are stored")
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        arr = group.create_array(name, shape=a.shape, dtype=a.dtype, chunks=tuple(max(1, s) for s in a.shape),
                                 compressors=None, fill_value=0)
        if a.size:
            arr[...] = a
        index[name] = {"shape": list(a.shape), "dtype": a.dtype.str, "crc32": _crc(a)}
        nbytes += a.nbytes
    group.attrs.update({MARK: {"arrays": index, "scalars": scalars}})  # last: the group is complete
    return nbytes


def read_moments(root: zarr.storage.StoreLike, row_id: int) -> dict[str, np.ndarray] | None:
    """The arrays of row ``row_id`` as written, or None when its group is missing or damaged
    (incomplete, an array missing or of another shape/dtype, a checksum mismatch)."""
    try:
        group = zarr.open_group(store=root, path=A.moments_path(row_id), mode="r", zarr_format=3)
        mark = group.attrs.get(MARK)
        if not isinstance(mark, dict):
            return None
        out: dict[str, np.ndarray] = {k: np.array(v) for k, v in mark["scalars"].items()}
        for name, spec in mark["arrays"].items():
            arr = group[name]
            if not isinstance(arr, zarr.Array) or list(arr.shape) != spec["shape"]:
                return None
            a = np.asarray(arr[...])
            if a.dtype.str != spec["dtype"] or _crc(a) != spec["crc32"]:
                return None
            out[name] = a
        return out
    except Exception:  # any unreadable group is a cache miss, never a crash
        return None


def moments_exist(root: zarr.storage.StoreLike, row_id: int) -> bool:
    """Whether row ``row_id``'s group was written completely (metadata only; the values are
    checked when read)."""
    try:
        group = zarr.open_group(store=root, path=A.moments_path(row_id), mode="r", zarr_format=3)
        return isinstance(group.attrs.get(MARK), dict)
    except Exception:  # missing or unreadable: not there
        return False


def delete_moments(root: zarr.storage.StoreLike, row_id: int) -> None:
    """Remove row ``row_id``'s group (no error when already gone)."""
    A.delete_array(root, A.moments_path(row_id))


def list_moments(root: zarr.storage.StoreLike) -> list[str]:
    """Names under ``moments/`` in the byte store (verify's orphan scan), as ``moments/NAME``."""
    if isinstance(root, zarr.storage.LocalStore):
        base = Path(root.root) / "moments"
        return sorted(f"moments/{p.name}" for p in base.iterdir() if p.name != "zarr.json") if base.is_dir() else []
    from zarr.core.sync import sync

    fs = getattr(root, "fs", None)
    if fs is not None and hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()

    async def names() -> list[str]:
        return [n async for n in root.list_dir("moments/")]  # type: ignore[union-attr]

    return sorted(f"moments/{n}" for n in sync(names()) if n != "zarr.json")


def moments_bytes(root: zarr.storage.StoreLike) -> int:
    """Bytes of the groups under ``moments/`` (local roots; 0 for object stores, where the catalog's
    ``nbytes`` stands in)."""
    if not isinstance(root, zarr.storage.LocalStore):
        return 0
    base = Path(root.root) / "moments"
    total = 0
    for group in base.iterdir() if base.is_dir() else ():
        if not group.is_dir() or group.is_symlink():  # the groups only (not moments/zarr.json)
            continue
        for p in group.rglob("*"):
            try:
                if p.is_file() and not p.is_symlink():
                    total += p.stat().st_size
            except OSError:  # removed meanwhile
                pass
    return total


def delete_rows(conn: sa.Connection, where: Any | None = None) -> tuple[list[int], int]:
    """Delete the ``rep_moments`` rows matching ``where`` (all when None), not their groups:
    (their ids, their recorded bytes). Delete the groups (:func:`delete_groups`) once the
    transaction commits; a crash in between leaves orphan groups, which ``verify --repair``
    removes."""
    c = S.rep_moments.c
    q = sa.select(c.id, c.nbytes)
    if where is not None:
        q = q.where(where)
    rows = conn.execute(q).all()
    ids = [int(r[0]) for r in rows]
    for start in range(0, len(ids), 500):
        conn.execute(S.rep_moments.delete().where(c.id.in_(ids[start:start + 500])))
    return ids, sum(int(r[1] or 0) for r in rows)


def delete_groups(root: zarr.storage.StoreLike, row_ids: Iterable[int]) -> None:
    """Remove the groups of deleted rows."""
    for row_id in row_ids:
        delete_moments(root, row_id)


def drop_rows(conn: sa.Connection, root: zarr.storage.StoreLike, where: Any | None = None) -> tuple[int, int]:
    """Delete the ``rep_moments`` rows matching ``where`` and their groups, inside the
    caller's transaction: (rows, their recorded bytes). A group that cannot be removed now
    is left as an orphan for ``verify --repair`` (never fails the transaction); should the
    transaction roll back, the rows left point at missing groups, which read as cache misses."""
    ids, nbytes = delete_rows(conn, where)
    for row_id in ids:
        with contextlib.suppress(Exception):  # an orphan group is harmless; verify --repair removes it
            delete_moments(root, row_id)
    return len(ids), nbytes


class MomentFiles:
    """A store's cached-moments groups (``Store.moment_files``): what the query layer calls."""

    def __init__(self, root: zarr.storage.StoreLike) -> None:
        self._root = root

    def write(self, row_id: int, arrays: dict[str, np.ndarray]) -> int:
        return write_moments(self._root, row_id, arrays)

    def read(self, row_id: int) -> dict[str, np.ndarray] | None:
        return read_moments(self._root, row_id)

    def exists(self, row_id: int) -> bool:
        return moments_exist(self._root, row_id)

    def delete(self, row_id: int) -> None:
        delete_moments(self._root, row_id)

    def drop_rows(self, conn: sa.Connection, where: Any | None = None) -> tuple[int, int]:
        """:func:`drop_rows` on this store."""
        return drop_rows(conn, self._root, where)
