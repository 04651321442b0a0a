"""PostgreSQL schemas per store: ``?schema=NAME`` on the catalog URL (and libpq's
``options=-csearch_path=NAME``), views readable from psql without a search_path, two stores
in two schemas of one database kept apart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import actdb
from actdb.errors import InvalidInput, NotAStore
from actdb.store.catalog import catalog_schema, connect_url, parse_schema

# ------------------------------------------------------------------ URL parsing (no server)


def test_schema_parameter_becomes_search_path_option() -> None:
    u = connect_url("postgresql+psycopg://u@h/db?schema=team_a")
    assert "schema" not in u.query
    assert u.query["options"] == "-csearch_path=team_a"
    kept = connect_url("postgresql+psycopg://u@h/db?schema=team_a&options=-cstatement_timeout%3D5000")
    assert kept.query["options"] == "-cstatement_timeout=5000 -csearch_path=team_a"


def test_catalog_schema_reads_both_forms() -> None:
    assert catalog_schema("postgresql+psycopg://u@h/db?schema=team_a") == "team_a"
    assert catalog_schema("postgresql+psycopg://u@h/db?options=-csearch_path%3Dteam_b") == "team_b"
    assert catalog_schema("postgresql+psycopg://u@h/db?options=-c%20search_path%3DTeam_C,public") == "team_c"
    assert catalog_schema("postgresql+psycopg://u@h/db") is None
    assert catalog_schema("duckdb:///x/catalog.duckdb") is None


@pytest.mark.parametrize("bad", ["Team", "team-a", "1team", "pg_team", "a;drop", "", "x" * 64,
                                 "information_schema", 'a"b'])
def test_schema_names_must_be_plain_identifiers(bad: str) -> None:
    with pytest.raises(InvalidInput, match="not a plain identifier") as info:
        parse_schema(bad)
    assert repr(bad)[:50] in str(info.value)
    from urllib.parse import quote

    with pytest.raises(InvalidInput, match="not a plain identifier"):
        connect_url(f"postgresql+psycopg://u@h/db?schema={quote(bad)}")


def test_schema_given_twice_or_on_duckdb_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="names its schema twice"):
        connect_url("postgresql+psycopg://u@h/db?schema=a&options=-csearch_path%3Db")
    with pytest.raises(InvalidInput, match="not a plain identifier"):
        connect_url("postgresql+psycopg://u@h/db?schema=a&schema=b")  # two values
    with pytest.raises(InvalidInput, match="PostgreSQL catalogs only"):
        actdb.open(str(tmp_path / "s"), catalog_url=f"duckdb:///{tmp_path}/c.duckdb?schema=a")


# ------------------------------------------------------------------ a real server

pytestmark_pg = pytest.mark.postgres


@pytest.fixture
def schemas(pg_server: str) -> Iterator[list[str]]:
    """Names for fresh schemas (not created here: actdb creates them); dropped afterwards."""
    import sqlalchemy as sa

    from actdb.store.sql_postgres import reader_role

    names = [f"actdb_t_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    yield names
    engine = sa.create_engine(pg_server)
    with engine.begin() as conn:
        for name in names:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{reader_role(name)}"')
    engine.dispose()


def _fill(db: actdb.Database, model: str, n: int) -> None:
    db.add_dataset("texts", [f"text number {i}" for i in range(n)])
    rng = np.random.default_rng(n)
    for layer in range(2):
        db.write_rep(model, "final", "texts", f"hidden.{layer}", rng.standard_normal((n, 6)).astype("float32"),
                     pooling="mean")


def _plain(pg_server: str):  # type: ignore[no-untyped-def]
    """A psycopg connection as psql would make it: no search_path of ours."""
    import psycopg

    return psycopg.connect(pg_server.replace("postgresql+psycopg://", "postgresql://"))


@pytestmark_pg
def test_schema_parameter_creates_schema_and_views_read_from_plain_psql(
        tmp_path: Path, pg_server: str, schemas: list[str]) -> None:
    schema = schemas[0]
    db = actdb.open(str(tmp_path / "s"), catalog_url=f"{pg_server}?schema={schema}")
    try:
        _fill(db, "pythia", 5)
        a, b = [r.rep_id for r in db.reps()]
        db.reps(layer=0).compare(db.reps(layer=1)).compute()
    finally:
        db.close()
    with _plain(pg_server) as conn:
        assert schema not in conn.execute("SHOW search_path").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}
        assert {"rep", "result", "model", "alembic_version", "rep_moments"} <= tables
        rows = conn.execute(f'SELECT rep_id, model, site FROM "{schema}".reps ORDER BY rep_id').fetchall()
        assert rows == [(a, "pythia", "hidden.0"), (b, "pythia", "hidden.1")]
        assert conn.execute(f"SELECT count(*) FROM {schema}.dissimilarities").fetchone()[0] == 1
        assert conn.execute(f"SELECT model FROM {schema}.models").fetchall() == [("pythia",)]
    # remembered in the store: reopening needs no URL
    again = actdb.open(str(tmp_path / "s"))
    try:
        assert again.catalog.schema == schema
        assert len(list(again.reps())) == 2
    finally:
        again.close()


@pytestmark_pg
def test_two_stores_in_two_schemas_do_not_see_each_other(tmp_path: Path, pg_server: str,
                                                         schemas: list[str]) -> None:
    one = actdb.open(str(tmp_path / "one"), catalog_url=f"{pg_server}?schema={schemas[0]}")
    two = actdb.open(str(tmp_path / "two"), catalog_url=f"{pg_server}?schema={schemas[1]}")
    try:
        _fill(one, "same-name", 4)
        _fill(two, "same-name", 7)
        two.write_rep("other", "final", "texts", "hidden.0", np.ones((7, 6), "float32"), pooling="mean")
        assert [r.n_rows for r in one.reps()] == [4, 4]
        assert sorted(r.n_rows for r in two.reps()) == [7, 7, 7]
        assert [m.name for m in one.models()] == ["same-name"]
        assert one.sql("SELECT count(*) AS n FROM reps").column("n").to_pylist() == [2]
        assert two.sql("SELECT count(*) AS n FROM reps").column("n").to_pylist() == [3]
        assert one.texts("texts") == [f"text number {i}" for i in range(4)]
    finally:
        one.close()
        two.close()
    with _plain(pg_server) as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {s}.reps").fetchone()[0] for s in schemas]
    assert counts == [2, 3]


@pytestmark_pg
def test_db_sql_and_dissim_with_schema_parameter(tmp_path: Path, pg_server: str, schemas: list[str]) -> None:
    from actdb.store.sql_postgres import reader_role

    schema = schemas[0]
    db = actdb.open(str(tmp_path / "s"), catalog_url=f"{pg_server}?schema={schema}")
    try:
        _fill(db, "m", 6)
        out = db.sql("SELECT a.layer AS la, b.layer AS lb, dissim('linear_cka', a.rep_id, b.rep_id) AS v "
                     "FROM reps a, reps b WHERE a.layer < b.layer")
        assert out.num_rows == 1 and 0.0 < out.column("v")[0].as_py() <= 1.0
        assert db.sql("SELECT count(*) AS n FROM dissimilarities").column("n").to_pylist() == [1]
        with pytest.raises(InvalidInput):  # the raw tables stay out of reach
            db.sql("SELECT * FROM rep")
    finally:
        db.close()
    with _plain(pg_server) as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (reader_role(schema),)).fetchone()


@pytestmark_pg
def test_options_search_path_form_still_works_and_creates_a_missing_schema(
        tmp_path: Path, pg_server: str, schemas: list[str]) -> None:
    schema = schemas[0]
    db = actdb.open(str(tmp_path / "s"), catalog_url=f"{pg_server}?options=-csearch_path%3D{schema}")
    try:
        _fill(db, "m", 3)
        assert db.catalog.schema == schema
        assert db.sql("SELECT count(*) AS n FROM reps").column("n").to_pylist() == [2]
    finally:
        db.close()
    with _plain(pg_server) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.reps").fetchone()[0] == 2


@pytestmark_pg
def test_read_only_open_of_a_missing_schema_is_not_a_store(tmp_path: Path, pg_server: str,
                                                           schemas: list[str]) -> None:
    import sqlalchemy as sa

    schema = schemas[0]
    db = actdb.open(str(tmp_path / "s"), catalog_url=f"{pg_server}?schema={schema}")
    db.close()
    engine = sa.create_engine(pg_server)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    engine.dispose()
    with pytest.raises(NotAStore, match=f"no schema '{schema}'"):
        actdb.open(str(tmp_path / "s"), read_only=True)


@pytestmark_pg
def test_cli_init_with_schema_and_bad_schema(tmp_path: Path, pg_server: str, schemas: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from actdb.cli import main

    with pytest.raises(SystemExit) as ok:
        main(["init", str(tmp_path / "s"), "--catalog", f"{pg_server}?schema={schemas[0]}"])
    assert ok.value.code == 0 and "catalog postgresql" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["init", str(tmp_path / "bad"), "--catalog", f"{pg_server}?schema=Bad-Name"])
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert "'Bad-Name'" in err and "plain identifier" in err and "Traceback" not in err
