"""Alembic environment for actdb catalogs.

actdb runs migrations programmatically (``actdb.store.migrate``): the caller passes
an open SQLAlchemy connection in ``config.attributes["connection"]``. Running the
``alembic`` command line against a URL (``-x url=...``) works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from actdb.store.migrate import register_duckdb

register_duckdb()  # Alembic has no DuckDB dialect of its own


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        url = context.get_x_argument(as_dictionary=True).get("url")
        if not url:
            raise SystemExit("pass -x url=<catalog URL> or run through `actdb migrate`")
        with create_engine(url).connect() as conn:
            _run(conn)
    else:
        _run(connection)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
