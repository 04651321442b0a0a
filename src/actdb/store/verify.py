"""``verify``: check every complete rep against its catalog record; ``repair`` cleans up.

Checks: the catalog's array path is the one derived from the rep's id, the array's
metadata (shape, dtype, chunking, codec, owner) matches the catalog, every chunk matches its
recorded checksum, and the whole rep's checksum (over the stored values in row order)
matches. Finds ``writing`` leftovers of crashed writes, orphan array folders no rep
points at and cached-moments groups no ``rep_moments`` row names. ``repair`` removes
leftovers and orphans and quarantines corrupt reps (status ``corrupt``, array moved under
``quarantine/``), and brings intact arrays of older stores up to date: per-chunk checksums,
Zarr ``dimension_names`` and the rep's descriptive attributes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa

from actdb.errors import CorruptStore
from actdb.store import arrays as A
from actdb.store import moments_files as MF
from actdb.store import schema as S
from actdb.store.array_files import describe_array, rep_attributes, undescribed
from actdb.store.checksums import CRC_ATTR, REP_ATTR, ChunkChecksums
from actdb.store.records import Problem, VerifyReport

if TYPE_CHECKING:
    from actdb.store.store import Store



def _check_rep(store: Store, row: sa.RowMapping) -> str | None:
    """None when the rep is intact, else why not: its catalog path, its array's metadata
    (shape, dtype, chunking, codec, owner) against the catalog, every chunk against its
    recorded checksum, and the whole rep against the catalog's checksum."""
    try:
        arr = A.RepArray(store.root, row["path"], rep_id=row["id"], n_rows=row["n_rows"], dim=row["dim"],
                         dtype=row["dtype"], chunk_rows=row["chunk_rows"], shard_rows=row["shard_rows"],
                         codec=row["codec"])
        stats = A.RowStats(row["dtype"])
        for start in range(0, row["n_rows"], row["shard_rows"]):
            stats.update(arr.read_stored(start, start + row["shard_rows"]))
    except CorruptStore as exc:
        return str(exc)
    except Exception as exc:  # any decode failure means a damaged array
        return f"array cannot be read: {type(exc).__name__}: {exc}"
    if stats.checksum != row["checksum"]:
        return f"checksum {stats.checksum} != catalog {row['checksum']}"
    return None


def _unsealed(store: Store, row: sa.RowMapping) -> bool:
    """Whether an intact rep's array predates per-chunk checksums."""
    arr = A.open_array(store.root, A.rep_path(row["id"]))
    return arr.attrs.get(CRC_ATTR) is None


def _seal(store: Store, row: sa.RowMapping) -> None:
    """Record per-chunk checksums (and the owner) of an intact rep written before they existed."""
    import zarr

    arr = zarr.open_array(store.root, path=A.rep_path(row["id"]), mode="r+")
    sums = ChunkChecksums(row["chunk_rows"])
    for start in range(0, row["n_rows"], row["shard_rows"]):
        sums.update(np.asarray(arr[start: start + row["shard_rows"]]))
    arr.attrs.update({REP_ATTR: int(row["id"])})
    A.seal(arr, sums.values)


def _describe(store: Store, row: sa.RowMapping) -> bool:
    """Add ``dimension_names`` and the descriptive attributes to an intact rep's array that lacks
    them (written by an older actdb); whether anything was added."""
    import zarr

    arr = zarr.open_array(store.root, path=A.rep_path(row["id"]), mode="r+")
    describe = rep_attributes(store.reps.record(row["id"]))
    if not undescribed(arr, describe):
        return False
    describe_array(arr, describe)
    return True


def verify(store: Store, *, repair: bool = False) -> VerifyReport:
    """Check every complete rep (see :func:`_check_rep`); find unfinished writes, arrays of
    replaced reps and orphan folders. Array locations are derived from rep ids: a catalog
    ``path`` that disagrees is reported as corruption and never followed, and nothing outside
    the store's array root is ever read, moved or deleted. ``repair`` removes leftovers and
    orphans, quarantines corrupt reps and adds per-chunk checksums, ``dimension_names`` and
    descriptive attributes to intact reps written by an older actdb."""
    problems: list[Problem] = []
    repaired: list[str] = []
    with store.catalog.connect() as conn:
        rows = conn.execute(sa.select(S.rep)).mappings().all()
    known = {A.rep_path(r["id"]) for r in rows}
    checked = 0
    for row in rows:
        if row["status"] == "complete":
            checked += 1
            why = _check_rep(store, row)
            if why is None:
                if repair and not store.read_only and _unsealed(store, row):
                    _seal(store, row)
                    repaired.append(f"added chunk checksums to rep {row['id']} ({row['site']})")
                if repair and not store.read_only and _describe(store, row):
                    repaired.append(f"added dimension names and attributes to rep {row['id']} ({row['site']})")
                continue
            problems.append(Problem(row["id"], "corrupt", f"rep {row['id']} ({row['site']}): {why}"))
            if repair:
                _quarantine(store, row)
                repaired.append(f"quarantined rep {row['id']} ({row['site']})")
        elif row["status"] in ("writing", "abandoned"):
            problems.append(Problem(row["id"], "leftover",
                                    f"rep {row['id']} ({row['site']}) is an unfinished write "
                                    f"({row['rows_written']} of {row['n_rows']} rows)"))
            if repair:
                with store.catalog.connect(write=True) as conn:
                    conn.execute(S.rep.delete().where(S.rep.c.id == row["id"]))
                A.delete_array(store.root, A.rep_path(row["id"]))
                repaired.append(f"removed unfinished rep {row['id']}")
        elif row["status"] == "replaced" and A.array_exists(store.root, A.rep_path(row["id"])) and repair:
            A.delete_array(store.root, A.rep_path(row["id"]))
            repaired.append(f"removed array of replaced rep {row['id']}")
    _orphans(store, A.list_arrays(store.root), known, A.REP_PATH, "an array", "array {} belongs to no rep",
             "removed orphan array {}", problems, repaired, repair)
    _moment_orphans(store, problems, repaired, repair)
    if repair:
        remaining = verify(store, repair=False)
        return VerifyReport(checked, remaining.problems, tuple(repaired))
    return VerifyReport(checked, tuple(problems), tuple(repaired))


def _moment_orphans(store: Store, problems: list[Problem], repaired: list[str], repair: bool) -> None:
    """Cached-moments groups (``moments/NNNNNNNNN``) that no ``rep_moments`` row names: an
    interrupted removal or cache write leaves them; repair removes them."""
    with store.catalog.connect() as conn:
        known = {A.moments_path(i) for i in conn.execute(sa.select(S.rep_moments.c.id)).scalars()}
    _orphans(store, MF.list_moments(store.root), known, A.MOMENTS_PATH, "a moments group",
             "cached moments {} belong to no rep_moments row", "removed orphan cached moments {}",
             problems, repaired, repair)


def _orphans(store: Store, paths: list[str], known: set[str], pattern: re.Pattern[str], kind: str, found: str,
             removed: str, problems: list[Problem], repaired: list[str], repair: bool) -> None:
    """Report (and with ``repair`` delete) folders under the array root that no catalog row names;
    names actdb does not write (``pattern``) are reported and left untouched."""
    for path in paths:
        if path in known:
            continue
        if not pattern.fullmatch(path):
            problems.append(Problem(None, "orphan", f"{path!r:.200} in the array root is not {kind} actdb "
                                                    "writes; left untouched"))
            continue
        problems.append(Problem(None, "orphan", found.format(path)))
        if repair:
            A.delete_array(store.root, path)
            repaired.append(removed.format(path))


def _quarantine(store: Store, row: sa.RowMapping) -> None:
    """Status ``corrupt``; a local array moves (from its id-derived path, inside the store's
    array root) to ``STORE/quarantine/rep-ID``."""
    with store.catalog.connect(write=True) as conn:
        conn.execute(S.rep.update().where(S.rep.c.id == row["id"]).values(status="corrupt"))
    if "://" not in store.arrays_location:
        root = Path(store.arrays_location).resolve()
        src = Path(store.arrays_location) / A.rep_path(row["id"])
        if src.is_symlink() or not src.exists():
            return
        if not src.resolve().is_relative_to(root):
            return
        dest = store.path / "quarantine" / f"rep-{int(row['id'])}"
        dest.parent.mkdir(exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(src), str(dest))
