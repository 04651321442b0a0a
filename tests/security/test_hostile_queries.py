"""Hostile SQL and subset predicates: writes, file reads, settings, PRAGMAs, several
statements, runaway joins and huge results. Each is refused with a typed actdb error
(UnsafeQuery / InvalidInput) and nothing is written or read outside the catalog."""

from __future__ import annotations

import time

import pytest
from security_kit import Snapshot, populate, raises_actdb

import actdb
from actdb.errors import InvalidInput, UnsafeQuery

pytestmark = pytest.mark.slow

SUBSETS = [
    "1=1; COPY token TO '{out}/stolen.csv'",
    "label = 'a'; DROP TABLE t",
    "label = 'a'; SELECT 1",
    "COPY t TO '{out}/stolen.csv'",
    "ATTACH '{out}/evil.duckdb' AS evil",
    "INSTALL httpfs",
    "LOAD httpfs",
    "label IN (SELECT secret_column FROM read_csv('{out}/secret.csv'))",
    "read_csv('{out}/secret.csv') IS NOT NULL",
    "read_text('{out}/secret.csv') = ''",
    "label = (SELECT 1)",
    "EXISTS (SELECT * FROM glob('{out}/*'))",
    "getenv('HOME') = 'x'",
    "current_setting('enable_external_access') = 'true'",
    "query('SELECT 1') IS NULL",
    "label = 'a' UNION SELECT 1",
    "evil.label = 'x'",
    "secret_column = 1",
    "label = 'x' /* ; */",
    "",
    "   ",
]

WRITES = [
    "INSERT INTO model (id, name) VALUES (99, 'x')",
    "UPDATE rep SET status = 'writing'",
    "DELETE FROM result",
    "DROP VIEW reps",
    "CREATE TABLE x AS SELECT 1",
    "ALTER TABLE rep ADD COLUMN x INT",
    "SELECT 1 INTO stolen",
    "WITH x AS (DELETE FROM rep RETURNING id) SELECT * FROM x",
    "SELECT 1; DELETE FROM rep",
    "COPY (SELECT * FROM tokens) TO '{out}/stolen.csv'",
    "EXPORT DATABASE '{out}/dump'",
    "ATTACH '{out}/evil.duckdb' AS evil",
    "DETACH evil",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "USE evil",
    "VACUUM",
    "CHECKPOINT",
    "CALL pragma_version()",
    "PRAGMA database_list",
    "PRAGMA enable_profiling",
]

FILE_READS = [
    "SELECT * FROM read_csv('{out}/secret.csv')",
    "SELECT * FROM read_csv_auto('{out}/secret.csv')",
    "SELECT * FROM '{out}/secret.csv'",
    'SELECT * FROM "{out}/secret.csv"',
    "SELECT * FROM read_text('{out}/secret.csv')",
    "SELECT * FROM read_blob('{out}/secret.csv')",
    "SELECT * FROM read_json_objects('{out}/secret.csv')",
    "SELECT * FROM parquet_metadata('{out}/secret.csv')",
    "SELECT * FROM sqlite_scan('{out}/x.db', 't')",
    "SELECT * FROM glob('{out}/*')",
    "SELECT * FROM sniff_csv('{out}/secret.csv')",
    "SELECT getenv('HOME')",
    "SELECT current_setting('enable_external_access')",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM evil.main.secret",
    "SELECT * FROM reps r WHERE r.model IN (SELECT * FROM read_csv('{out}/secret.csv'))",
    "SELECT (SELECT count(*) FROM read_csv('{out}/secret.csv')) AS n FROM models",
]

SYNTAX = ["", "   ", "SELEC 1", "SELECT * FROM", "'", ";;;", "SELECT 1 FROM reps WHERE (", "\x00"]


def _fill(template: str, out: object) -> str:
    return template.replace("{out}", str(out))


def test_subset_predicates(hostile_store, unchanged):
    db, outside = hostile_store
    sel = db.reps(model="m", pooling="token")
    assert len(sel) == 4
    for template in SUBSETS:
        subset = _fill(template, outside)
        raises_actdb(lambda: sel.compare(subset=subset).compute(), actdb.ActdbError)
    # and a legitimate subset still works (read-only: it is computed, not cached, here)
    ok = sel.compare(measure="linear_cka", subset="label = 'a' AND position > 0")
    assert ok.explain()


@pytest.mark.parametrize("group", ["writes", "file_reads", "syntax"])
def test_sql_is_read_only_and_cannot_touch_files(hostile_store, unchanged, group):
    db, outside = hostile_store
    queries = {"writes": WRITES, "file_reads": FILE_READS, "syntax": SYNTAX}[group]
    for template in queries:
        query = _fill(template, outside)
        exc = raises_actdb(lambda: db.sql(query, max_rows=100, timeout=5), actdb.ActdbError)
        assert "TOPSECRET" not in str(exc)
        assert isinstance(exc, (UnsafeQuery, InvalidInput))
    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv"]


def test_runaway_cross_join_hits_the_time_limit(hostile_store, unchanged):
    db, _ = hostile_store
    t0 = time.monotonic()
    raises_actdb(lambda: db.sql("SELECT sum(a.range * b.range) FROM range(200000000) a, range(100000) b",
                                timeout=1.0), InvalidInput, match="time limit")
    assert time.monotonic() - t0 < 10
    t0 = time.monotonic()
    raises_actdb(lambda: db.sql("SELECT count(*) FROM tokens a, tokens b, tokens c, tokens d, tokens e, tokens f "
                                "WHERE (a.row * 31 + b.row * 17 + c.row * 7 + d.row * 3 + e.row + f.row) % 1000003 = 5",
                                timeout=1.0), InvalidInput, match="time limit")
    assert time.monotonic() - t0 < 10


def test_huge_results_hit_the_row_limit(hostile_store, unchanged):
    db, _ = hostile_store
    raises_actdb(lambda: db.sql("SELECT * FROM range(50000000)", max_rows=1000), InvalidInput, match="1000 rows")
    raises_actdb(lambda: db.sql("SELECT a.*, b.* FROM tokens a, tokens b", max_rows=1000), InvalidInput,
                 match="more than 1000 rows")
    assert db.sql("SELECT count(*) AS n FROM tokens a, tokens b", max_rows=1000).column("n")[0].as_py() == 36 * 36


def test_http_sql_endpoint(hostile_store, unchanged):
    from fastapi.testclient import TestClient

    from actdb.api.app import create_app

    db, outside = hostile_store
    with TestClient(create_app(db, sql_max_rows=100, sql_timeout=1.0)) as client:
        for template in WRITES + FILE_READS + SYNTAX[:3]:
            r = client.post("/v1/sql", json={"query": _fill(template, outside)})
            assert r.status_code == 400, (template, r.status_code, r.text)
            assert r.json()["type"] in ("UnsafeQuery", "InvalidInput"), r.text
            assert "TOPSECRET" not in r.text
        r = client.post("/v1/sql",
                        json={"query": "SELECT sum(a.range * b.range) FROM range(200000000) a, range(100000) b"})
        assert r.status_code == 400 and "time limit" in r.json()["error"], r.text
        r = client.post("/v1/sql", json={"query": "SELECT * FROM range(1000000)", "max_rows": 10**9})
        assert r.status_code == 400 and "100 rows" in r.json()["error"], r.text
        r = client.post("/v1/sql", json={"query": "SELECT count(*) AS n FROM reps"})
        assert r.status_code == 200 and r.json()["rows"] == [{"n": 8}]


@pytest.mark.postgres
def test_sql_on_a_postgresql_catalog(tmp_path, pg_url):

    db = actdb.open(str(tmp_path / "pg"), catalog_url=pg_url)
    populate(db)
    outside = tmp_path / "outside"
    outside.mkdir()
    snap = Snapshot(db, outside)
    for query in ["INSERT INTO model (name) VALUES ('x')", "DELETE FROM rep", "SELECT 1; DELETE FROM rep",
                  "COPY rep TO '/tmp/x.csv'", "SELECT pg_read_file('/etc/passwd')", "SELECT * FROM pg_ls_dir('.')",
                  "SELECT lo_import('/etc/passwd')", "SELECT current_setting('data_directory')",
                  "SELECT set_config('default_transaction_read_only', 'off', false)", "SELECT pg_sleep(10)",
                  "SELECT * FROM dblink('x', 'y') AS t(a int)"]:
        raises_actdb(lambda: db.sql(query, max_rows=100, timeout=5), actdb.ActdbError)
    t0 = time.monotonic()
    raises_actdb(lambda: db.sql("SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 1000) b",
                                timeout=1.0), InvalidInput, match="time limit")
    assert time.monotonic() - t0 < 10
    raises_actdb(lambda: db.sql("SELECT * FROM generate_series(1, 1000000)", max_rows=100), InvalidInput,
                 match="100 rows")
    snap.assert_unchanged()
    db.close()
