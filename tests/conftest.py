"""Shared fixtures: fresh stores on every catalog backend (DuckDB file, real PostgreSQL).

PostgreSQL tests use a fresh schema per test in the server's ``test`` database and
drop it afterwards. When the server is unreachable they skip locally, but fail under
CI (``CI=true``), so a broken CI database can never pass silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_URL = os.environ.get("ACTDB_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        return None
    except Exception as exc:  # any failure means no server
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


@pytest.fixture(scope="session")
def pg_server() -> str:
    why = _pg_available()
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at {PG_URL} is unreachable under CI: {why}")
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable: {why}")
    return PG_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A catalog URL on a fresh PostgreSQL schema, dropped after the test."""
    import sqlalchemy as sa

    schema = f"actdb_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_server)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{pg_server}?options=-csearch_path%3D{schema}"
    finally:
        from actdb.store.sql_postgres import reader_role

        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{reader_role(schema)}"')  # SQL's reader role
        engine.dispose()


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def catalog_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None for the embedded DuckDB catalog, else a fresh PostgreSQL schema URL."""
    if backend == "duckdb":
        return None
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def db(tmp_path: Path, catalog_url: str | None):  # type: ignore[no-untyped-def]
    """A fresh store on each catalog backend."""
    import actdb

    database = actdb.open(str(tmp_path / "store"), catalog_url=catalog_url)
    yield database
    database.close()


@pytest.fixture
def duck(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fresh store with the embedded DuckDB catalog only."""
    import actdb

    database = actdb.open(str(tmp_path / "store"))
    yield database
    database.close()
