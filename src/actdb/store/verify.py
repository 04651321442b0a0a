"""``verify``: check every complete rep against its catalog record; ``repair`` cleans up.

Checks: the array exists, its shape matches, its checksum (over the stored values in
row order) matches. Finds ``writing`` leftovers of crashed writes and orphan array
folders no rep points at. ``repair`` removes leftovers and orphans and quarantines
corrupt reps (status ``corrupt``, array moved under ``quarantine/``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from actdb.errors import CorruptStore
from actdb.store import arrays as A
from actdb.store import schema as S
from actdb.store.records import Problem, VerifyReport

if TYPE_CHECKING:
    from actdb.store.store import Store


def _check_rep(store: Store, row: sa.RowMapping) -> str | None:
    """None when the rep is intact, else why not."""
    try:
        arr = A.open_array(store._root, row["path"])
    except CorruptStore as exc:
        return str(exc)
    if arr.shape != (row["n_rows"], row["dim"]):
        return f"array shape {arr.shape} != catalog shape ({row['n_rows']}, {row['dim']})"
    stats = A.RowStats(row["dtype"])
    try:
        for start in range(0, row["n_rows"], row["shard_rows"]):
            stats.update(arr[start: start + row["shard_rows"]])
    except Exception as exc:  # noqa: BLE001 - any decode failure means a damaged array
        return f"array cannot be read: {type(exc).__name__}: {exc}"
    if stats.checksum != row["checksum"]:
        return f"checksum {stats.checksum} != catalog {row['checksum']}"
    return None


def verify(store: Store, *, repair: bool = False) -> VerifyReport:
    problems: list[Problem] = []
    repaired: list[str] = []
    with store.catalog.connect() as conn:
        rows = conn.execute(sa.select(S.rep)).mappings().all()
    live_paths = {r["path"] for r in rows if r["status"] in ("complete", "writing")}
    # a quarantined rep on an object store keeps its array in place (status 'corrupt')
    kept_paths = {r["path"] for r in rows if r["status"] == "corrupt"}
    checked = 0
    for row in rows:
        if row["status"] == "complete":
            checked += 1
            why = _check_rep(store, row)
            if why is None:
                continue
            problems.append(Problem(row["id"], "corrupt", f"rep {row['id']} ({row['site']}): {why}"))
            if repair:
                _quarantine(store, row)
                repaired.append(f"quarantined rep {row['id']} ({row['site']})")
        elif row["status"] in ("writing", "abandoned"):
            problems.append(Problem(row["id"], "leftover",
                                    f"rep {row['id']} ({row['site']}) is an unfinished write ({row['rows_written']} of {row['n_rows']} rows)"))
            if repair:
                with store.catalog.connect(write=True) as conn:
                    conn.execute(S.rep.delete().where(S.rep.c.id == row["id"]))
                A.delete_array(store._root, row["path"])
                repaired.append(f"removed unfinished rep {row['id']}")
        elif row["status"] == "replaced" and _exists(store, row["path"]):
            if repair:
                A.delete_array(store._root, row["path"])
                repaired.append(f"removed array of replaced rep {row['id']}")
    for path in _array_dirs(store):
        if path not in live_paths and path not in kept_paths and not any(r["path"] == path and r["status"] == "replaced" for r in rows):
            problems.append(Problem(None, "orphan", f"array {path} belongs to no rep"))
            if repair:
                A.delete_array(store._root, path)
                repaired.append(f"removed orphan array {path}")
    if repair:
        remaining = verify(store, repair=False)
        return VerifyReport(checked, remaining.problems, tuple(repaired))
    return VerifyReport(checked, tuple(problems), tuple(repaired))


def _exists(store: Store, path: str) -> bool:
    return A.array_exists(store._root, path)


def _array_dirs(store: Store) -> list[str]:
    return A.list_arrays(store._root)


def _quarantine(store: Store, row: sa.RowMapping) -> None:
    with store.catalog.connect(write=True) as conn:
        conn.execute(S.rep.update().where(S.rep.c.id == row["id"]).values(status="corrupt"))
    if "://" not in store.arrays_location:
        src = Path(store.arrays_location) / row["path"]
        if src.exists():
            dest = store.path / "quarantine" / f"rep-{row['id']}"
            dest.parent.mkdir(exist_ok=True)
            shutil.rmtree(dest, ignore_errors=True)
            shutil.move(str(src), str(dest))
