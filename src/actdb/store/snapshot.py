"""In-memory snapshots of DuckDB catalogs for repeated read-only SQL.

Opening a DuckDB file (creating a DuckDB instance, then reading the file) costs far more
than a dashboard's query over the catalog views (measured: docs/interfaces.md). actdb cannot keep the
file open between queries: while any process holds a DuckDB file, no other process can
write it. So a query that finds the catalog *unchanged* since the previous query runs on
an in-memory copy of it instead, and never touches the file.

"Unchanged" is the file's state: identity, size and modification time of
``catalog.duckdb`` and its write-ahead log, plus the bytes of DuckDB's file headers (they
carry the checkpoint iteration). Every commit appends to the log and every checkpoint
rewrites a header, so any write by any process changes the state. The state is read at
the start of each query, so a query sees the catalog as of its start, as it would by
opening the file.

The first query after a change reads the file directly (no copy: a writer that queries
after each write never pays for one); the second query that finds the same state builds
the copy, and later ones use it. The copy is an in-memory DuckDB with file and network
access disabled and its configuration locked, exactly like the direct connection.
Catalogs larger than :data:`MAX_BYTES` are never copied. A copy carries the memory and
thread limits it was made with (DuckDB settings are per database, and locked), so queries
with other limits use their own copy.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

#: Catalogs (file plus log) larger than this are queried from the file every time.
MAX_BYTES = 256 * 2**20
#: In-memory copies kept per process (one per catalog file, most recently used first).
MAX_SNAPSHOTS = 4
_HEADER_BYTES = 3 * 4096  # DuckDB's main header and its two database headers

State = tuple[Any, ...]


class _CopyFailed(Exception):
    """The catalog could not be copied (the query then reads the file)."""


def file_state(path: str) -> State | None:
    """The catalog's state, or None when the file cannot be read."""
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            header = fh.read(_HEADER_BYTES)
    except OSError:
        return None
    try:
        wal = os.stat(path + ".wal")
        log: tuple[int, ...] = (wal.st_ino, wal.st_size, wal.st_mtime_ns)
    except OSError:
        log = ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, log, header)


def _size(state: State) -> int:
    log = state[4]
    return int(state[2]) + (int(log[1]) if log else 0)


class SnapshotCache:
    """Per-process in-memory copies of catalog files, keyed by file and checked per query."""

    def __init__(self, max_snapshots: int = MAX_SNAPSHOTS):
        self.max_snapshots = max_snapshots
        self._lock = threading.Lock()
        self._seen: dict[tuple[Any, ...], State] = {}
        self._snapshots: OrderedDict[tuple[Any, ...], tuple[State, Any]] = OrderedDict()
        self.builds = 0  # copies made (tests and benchmarks read it)

    def cursor(self, path: str, attach: Any, settings: dict[str, Any] | None = None) -> Any | None:
        """A connection to an up-to-date in-memory copy of ``path``, or None when the
        caller should read the file itself (first sight of this state, too large,
        unreadable). ``attach(con, path)`` attaches the file read-only as ``src`` on a
        fresh in-memory connection (the caller's busy-retry logic). ``settings``: DuckDB
        settings of the copy (``memory_limit``, ``threads``; default: the default query
        limits), set before it is locked."""
        state = file_state(path)
        if state is None or _size(state) > MAX_BYTES:
            return None
        if settings is None:  # the default limits of a query
            from actdb.store.sql_limits import DEFAULT_MEMORY_LIMIT, DEFAULT_THREADS

            settings = {"memory_limit": DEFAULT_MEMORY_LIMIT, "threads": DEFAULT_THREADS}
        frozen = tuple(sorted(settings.items()))
        key = (os.getpid(), path, frozen)  # a forked child must not use its parent's DuckDB instance
        with self._lock:
            held = self._snapshots.get(key)
            if held is not None and held[0] == state:
                self._snapshots.move_to_end(key)
                return held[1].cursor()
            if self._seen.get(key) != state:
                if len(self._seen) >= 16 * self.max_snapshots:  # many short-lived stores (tests)
                    self._seen.clear()
                self._seen[key] = state
                return None
            try:
                con = _copy(path, attach, dict(frozen))
            except _CopyFailed:  # a copy is only a shortcut: read the file instead
                return None
            self.builds += 1
            self._snapshots[key] = (state, con)
            self._snapshots.move_to_end(key)
            while len(self._snapshots) > self.max_snapshots:
                self._snapshots.popitem(last=False)
            return con.cursor()

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self._snapshots.clear()


def _copy(path: str, attach: Any, settings: dict[str, Any] | None = None) -> Any:
    """A locked in-memory DuckDB holding every table and view of the catalog file."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        attach(con, path)
        tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'src' "
                             "AND schema_name = 'main' AND NOT temporary").fetchall()
        for (name,) in tables:
            quoted = '"' + name.replace('"', '""') + '"'
            con.execute(f"CREATE TABLE main.{quoted} AS FROM src.main.{quoted}")
        views = [sql for (sql,) in con.execute(
            "SELECT sql FROM duckdb_views() WHERE database_name = 'src' AND schema_name = 'main' "
            "AND NOT internal AND NOT temporary ORDER BY view_name").fetchall()]
        con.execute("DETACH src")
        _create_views(con, views)
        for name, value in (settings or {}).items():
            con.execute(f"SET {name} = '{value!s}'")  # values from Limits.parse: sizes and integers
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise _CopyFailed(str(exc)) from exc
    except BaseException:
        con.close()
        raise
    return con


def _create_views(con: Any, views: list[str]) -> None:
    """Create views whose definitions may refer to each other, in any order."""
    import duckdb

    pending = list(views)
    while pending:
        failed: list[str] = []
        error: Exception | None = None
        for sql in pending:
            try:
                con.execute(sql)
            except duckdb.CatalogException as exc:  # refers to a view not created yet
                failed.append(sql)
                error = exc
        if len(failed) == len(pending):
            raise _CopyFailed(f"catalog views could not be copied: {error}")
        pending = failed


#: The process's snapshots (every Database of the process shares them).
SNAPSHOTS = SnapshotCache()
