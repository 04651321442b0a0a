"""Repeated read-only SQL runs on an in-memory copy of an unchanged DuckDB catalog: the
copy is made on the second sight of a file state, never serves a stale catalog, keeps
file access off, and never holds the file against a writer in another process."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pytest

import actdb
from actdb.errors import InvalidInput
from actdb.store import snapshot, sql_duckdb
from actdb.store.snapshot import SNAPSHOTS

COUNT = "SELECT count(*) AS n FROM results"
CKA = ("SELECT count(*) AS n, sum(dissim('linear_cka', a.rep_id, b.rep_id)) AS s FROM reps a JOIN reps b "
       "ON a.layer = b.layer WHERE b.checkpoint = 'final'")


@pytest.fixture
def opens(monkeypatch):
    """Counts direct opens of the catalog file for SQL."""
    calls: list[str] = []
    original = sql_duckdb.connect
    monkeypatch.setattr(sql_duckdb, "connect", lambda store, path, settings: calls.append(path)
                        or original(store, path, settings))
    SNAPSHOTS.clear()
    yield calls
    SNAPSHOTS.clear()


def test_an_unchanged_catalog_is_copied_once_and_then_not_opened(qdb, opens):
    db, _ = qdb
    builds = SNAPSHOTS.builds
    # record the calls (first sight of the file: read directly), compute and write 12 values
    # (the file changes), run again (first sight of the new state: read directly)
    first = db.sql(CKA).to_pylist()
    assert len(opens) == 2 and SNAPSHOTS.builds == builds
    for _ in range(3):  # the same state again: copied once, then only the copy
        assert db.sql(CKA).to_pylist() == first
        assert db.sql("SELECT model, count(*) AS k FROM reps GROUP BY 1").to_pylist() == [{"model": "m", "k": 12}]
    assert len(opens) == 2 and SNAPSHOTS.builds == builds + 1


def test_a_write_by_this_or_another_process_is_seen_by_the_next_query(qdb, opens, tmp_path):
    db, _ = qdb
    for _ in range(3):
        assert db.sql(COUNT).to_pylist() == [{"n": 0}]
    assert SNAPSHOTS.builds >= 1
    db.reps(layer=0).compare().compute()  # this process writes 6 results
    assert db.sql(COUNT).to_pylist() == [{"n": 6}]
    assert db.sql(COUNT).to_pylist() == [{"n": 6}]
    db.close()
    # another process, while this one holds a copy: the file is free for it to write
    code = ("import actdb, sys; db = actdb.open(sys.argv[1]); "
            "db.reps(layer=1).compare().compute(); db.close()")
    subprocess.run([sys.executable, "-c", code, str(db.path)], check=True, timeout=120)
    again = actdb.open(str(db.path), read_only=True)
    assert again.sql(COUNT).to_pylist() == [{"n": 12}]
    again.close()


def test_a_checkpoint_changes_the_state_through_the_file_headers(qdb, opens):
    db, _ = qdb
    path = str(db.path / "catalog.duckdb")
    db.reps(layer=0).compare().compute()
    states = []
    for _ in range(2):
        with db.catalog.connect(write=True) as conn:
            conn.exec_driver_sql("UPDATE result SET value = value + 1")
        with db.catalog.connect(write=True) as conn:
            conn.exec_driver_sql("CHECKPOINT")
        states.append(snapshot.file_state(path))
    assert states[0][4] == states[1][4] == ()  # no log left after either checkpoint
    assert states[0][5] != states[1][5]  # the headers alone tell the two files apart


def test_the_copy_cannot_read_files_or_change_its_configuration(qdb, opens):
    db, _ = qdb
    for _ in range(2):
        db.sql(COUNT)
    path = str(db.path / "catalog.duckdb")
    con = SNAPSHOTS.cursor(path, None)
    assert con is not None
    try:
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_csv('/etc/hostname')").fetchall()
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"ATTACH '{path}' AS again (READ_ONLY)")
    finally:
        con.close()
    with pytest.raises(InvalidInput, match="SQL error"):  # errors on the copy read as on the file
        db.sql("SELECT no_such_column FROM reps")


def test_large_catalogs_are_read_from_the_file(qdb, opens, monkeypatch):
    db, _ = qdb
    monkeypatch.setattr(snapshot, "MAX_BYTES", 0)
    builds = SNAPSHOTS.builds
    for _ in range(3):
        assert db.sql(COUNT).to_pylist() == [{"n": 0}]
    assert len(opens) == 3 and SNAPSHOTS.builds == builds


def test_dissim_udfs_do_not_pile_up_on_the_copy(qdb, opens):
    db, _ = qdb
    db.sql(CKA)
    for _ in range(4):
        db.sql(CKA)
    con = SNAPSHOTS.cursor(str(db.path / "catalog.duckdb"), None)
    try:
        left = con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name LIKE '_actdb%'").fetchall()
    finally:
        con.close()
    assert left == [(0,)]
