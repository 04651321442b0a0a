"""Schema migrations: upgrade -> downgrade -> upgrade on DuckDB and PostgreSQL, and refusal
of stores written by a newer actdb."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

import actdb
from actdb.errors import StoreTooNew
from actdb.store import migrate


def _objects(db: actdb.Database) -> set[str]:
    insp = sa.inspect(db.catalog.engine)
    return set(insp.get_table_names()) | set(insp.get_view_names())


def test_upgrade_downgrade_upgrade(db):
    db.add_dataset("d", ["a", "b"])
    db.write_rep("m", "c", "d", "hidden.1", np.ones((2, 3)), pooling="mean")
    head = migrate.head_revision()
    assert db.schema_revision() == head
    assert {"model", "rep", "result", "reps", "dissimilarities"} <= _objects(db)
    migrate.downgrade(db.catalog.engine, "base")
    assert db.schema_revision() is None
    assert not ({"model", "rep", "reps"} & _objects(db))
    migrate.upgrade(db.catalog.engine)
    assert db.schema_revision() == head
    # the schema works again after the round trip (a new handle: caches belong to a schema)
    db = actdb.open(str(db.path))
    db.add_dataset("d", ["a", "b"])
    assert db.write_rep("m", "c", "d", "hidden.1", np.ones((2, 3)), pooling="mean").status == "complete"


def test_open_upgrades_an_empty_or_old_catalog(tmp_path, catalog_url):
    path = tmp_path / "s"
    db = actdb.open(str(path), catalog_url=catalog_url)
    migrate.downgrade(db.catalog.engine, "base")
    db.close()
    again = actdb.open(str(path))
    assert again.schema_revision() == migrate.head_revision()
    assert again.migrate() == migrate.head_revision()


def test_newer_store_is_refused(tmp_path, catalog_url):
    path = tmp_path / "s"
    db = actdb.open(str(path), catalog_url=catalog_url)
    with db.catalog.connect(write=True) as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    db.close()
    with pytest.raises(StoreTooNew, match=r"9999_from_the_future.*newer actdb"):
        actdb.open(str(path))


def test_migrations_ship_inside_the_package():
    from importlib.resources import files

    versions = files("actdb.migrations") / "versions"
    assert any(p.name.startswith("0001") for p in versions.iterdir())
    assert (files("actdb.migrations") / "env.py").is_file()


def _pg_functions(db: actdb.Database) -> set[str]:
    with db.catalog.connect() as conn:
        return {r[0] for r in conn.exec_driver_sql(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema()")}


def test_0003_rep_moments_and_dissim_round_trip(db):
    assert {"rep_moments", "measure_default"} <= _objects(db)
    if db.catalog.dialect == "postgresql":
        assert "dissim" in _pg_functions(db)
    migrate.downgrade(db.catalog.engine, "0002")
    assert db.schema_revision() == "0002"
    assert not ({"rep_moments", "measure_default"} & _objects(db))
    assert {"foreign_rep", "result", "dissimilarities"} <= _objects(db)
    if db.catalog.dialect == "postgresql":
        assert "dissim" not in _pg_functions(db)
    migrate.upgrade(db.catalog.engine)
    assert db.schema_revision() == migrate.head_revision()
    assert {"rep_moments", "measure_default"} <= _objects(db)
    if db.catalog.dialect == "postgresql":
        with db.catalog.connect() as conn:  # the lookup-only function answers (NULL: nothing cached)
            assert conn.exec_driver_sql("SELECT dissim('linear_cka', 1, 2)").scalar() is None


def _columns(db: actdb.Database, table: str) -> set[str]:
    with db.catalog.connect() as conn:  # (DuckDB's column reflection fails: ask the table itself)
        return set(conn.exec_driver_sql(f"SELECT * FROM {table} LIMIT 0").keys())


def test_0005_moves_moments_out_of_the_catalog_dropping_the_cached_rows_once(db):
    assert "data" not in _columns(db, "rep_moments")
    migrate.downgrade(db.catalog.engine, "0004")
    assert "data" in _columns(db, "rep_moments")
    with db.catalog.connect(write=True) as conn:  # a blob as 0003-0004 cached it
        conn.exec_driver_sql(
            "INSERT INTO rep_moments (id, rep_id, checksum, space_hash, n, dim, data, nbytes, actdb_version, "
            "computed_at) VALUES (nextval('rep_moments_id_seq'), 1, 'c', 'all', 2, 3, '\\x00', 1, '0', "
            "CURRENT_TIMESTAMP)")
    migrate.upgrade(db.catalog.engine)
    assert db.schema_revision() == migrate.head_revision()
    assert "data" not in _columns(db, "rep_moments")
    with db.catalog.connect() as conn:  # a cache: recomputed on demand
        assert conn.exec_driver_sql("SELECT count(*) FROM rep_moments").scalar() == 0
