"""Read-only SQL from outside the store: the one place that picks the catalog engine's runner.

:func:`run_readonly` runs a query the caller has already validated (against its
allow-list) within :class:`~actdb.store.sql_limits.Limits`, on the
engine's sandbox: :mod:`actdb.store.sql_duckdb` (a read-only, locked-down connection) or
:mod:`actdb.store.sql_postgres` (a READ ONLY transaction as the store's reader role).
:func:`view_page` reads one page of a catalog view with a WHERE clause built from bound
parameters (the HTTP results listing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import sqlalchemy as sa

from actdb.errors import InvalidInput
from actdb.store import sql_duckdb, sql_postgres
from actdb.store.sql_limits import Limits
from actdb.store.sql_lookup import Lookup

if TYPE_CHECKING:
    from actdb.store.store import Store


def sql_dialect(store: Store) -> Literal["duckdb", "postgres"]:
    """The SQL dialect a query on the store's catalog is written in (sqlglot's name)."""
    return "postgres" if store.catalog.dialect == "postgresql" else "duckdb"


def run_readonly(store: Store, query: str, limits: Limits, *, lookup: Lookup | None = None) -> pa.Table:
    """One validated SELECT on the store's catalog views, within ``limits``; an Arrow table.

    ``lookup``: the query calls ``dissim(measure, rep_a, rep_b)`` (see
    :mod:`actdb.store.sql_lookup`), which DuckDB and PostgreSQL catalogs answer."""
    dialect = store.catalog.dialect
    if dialect == "duckdb":
        return sql_duckdb.run(store, query, limits, lookup)
    if lookup is not None and dialect != "postgresql":
        raise InvalidInput(f"dissim() inside SQL needs a DuckDB or PostgreSQL catalog, not {dialect}; "
                           "compute with db.reps(...).compare(...) and read the dissimilarities view")
    return sql_postgres.run(store, query, limits, lookup)


def view_page(store: Store, view: str, columns: str, where: str, params: dict[str, Any], *, order_by: str,
              limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Rows ``offset`` to ``offset + limit`` of ``SELECT columns FROM view{where} ORDER BY
    order_by``, and the count of all rows ``where`` matches, read in one transaction.
    ``view``, ``columns``, ``where`` and ``order_by`` are SQL text of the caller's own
    making; every value comes in ``params`` (bound, never spliced)."""
    query = f"SELECT {columns} FROM {view}{where} ORDER BY {order_by} LIMIT :lim OFFSET :off"
    with store.catalog.connect() as conn:
        total = int(conn.execute(sa.text(f"SELECT count(*) FROM {view}{where}"), params).scalar_one())
        rows = [dict(r) for r in conn.execute(sa.text(query), {**params, "lim": limit, "off": offset}).mappings()]
    return rows, total
