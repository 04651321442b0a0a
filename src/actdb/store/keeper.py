"""Holding a DuckDB catalog file open between transactions, for a process that is its store's only user.

Each catalog transaction opens the DuckDB file unless the process already holds it; a
server keeps one idle connection open for its lifetime, so that a transaction does not
pay for the open (the costs: docs/interfaces.md). While it does, no other process can open the file: the
holder is the store's only writer, so it knows every change of the catalog. PostgreSQL
catalogs have nothing to hold.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa

if TYPE_CHECKING:
    from actdb.store.store import Store


class Held(Protocol):
    """An open catalog connection; ``close()`` lets the file go."""

    def close(self) -> None: ...


def holds_file(store: Store) -> bool:
    """Whether the store's catalog is a DuckDB file, which :func:`keep_open` can hold."""
    return store.catalog.dialect == "duckdb"


def keep_open(store: Store) -> Held:
    """An idle connection holding the store's DuckDB catalog open (busy handling and errors
    as for any transaction); close it to let the file go."""
    try:
        with store.catalog.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as exc:
        if "different configuration" not in str(exc):
            raise
        # a read-only connection of the last SQL query is still referenced
        # (an Arrow reader in a traceback): collect it, then open
        gc.collect()
    return store.catalog.engine.connect()
