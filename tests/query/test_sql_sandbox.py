"""The read-only SQL sandbox: an allow-list (views, CTEs, BI functions), PostgreSQL queries
as a reader role that holds even when the validator is bypassed, bounded time, memory,
rows and bytes, and one-line errors for what used to be tracebacks."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import actdb
from actdb.errors import InvalidInput, StoreBusy, UnsafeQuery
from actdb.query.sql import Limits, check_select


@pytest.fixture
def sdb(tmp_path, catalog_url):
    db = actdb.open(str(tmp_path / "s"), catalog_url=catalog_url)
    db.add_dataset("d", ["a b", "c d e", "f g", "h i j"], labels=["x", "y", "x", "y"])
    rng = np.random.default_rng(0)
    for layer in range(3):
        db.write_rep("m", "final", "d", f"hidden.{layer}", rng.normal(size=(4, 5)), pooling="mean")
    yield db
    db.close()


BI_QUERIES = [
    "SELECT model, count(*) AS n, avg(dim) AS d FROM reps GROUP BY model ORDER BY n DESC",
    "WITH x AS (SELECT layer, n_rows FROM reps), y AS (SELECT * FROM x WHERE layer > 0) "
    "SELECT count(*) AS n FROM y UNION ALL SELECT count(*) FROM x",
    "SELECT layer, row_number() OVER (PARTITION BY model ORDER BY layer) AS r, "
    "CASE WHEN layer > 1 THEN 'deep' ELSE 'shallow' END AS depth, coalesce(step, 0) AS s, "
    "CAST(layer AS REAL) / 2 AS half, upper(site) AS u, round(CAST(stat_std AS DECIMAL), 3) AS sd FROM reps",
    "SELECT date_trunc('day', created_at) AS day, extract(year FROM created_at) AS y FROM reps",
    "SELECT a.layer AS la, b.layer AS lb, dissim('linear_cka', a.rep_id, b.rep_id) AS cka FROM reps a, reps b",
    "SELECT label, count(*) AS n FROM examples GROUP BY label ORDER BY label",
    "SELECT * FROM generate_series(1, 3) g",
]


def test_bi_queries_are_allowed_on_both_backends(sdb):
    for query in BI_QUERIES:
        assert sdb.sql(query).num_rows >= 1, query
    assert sdb.sql("SELECT count(*) AS n FROM dissimilarities").to_pylist() == [{"n": 6}]  # symmetric: 3 + 3


ESCAPES = [
    ("SELECT query_to_xml('SELECT pg_read_file(''/etc/hostname'')', true, true, '')", "query_to_xml"),
    ("SELECT * FROM pg_ls_dir('.')", "pg_ls_dir"),
    ("SELECT * FROM pg_settings", "pg_settings"),
    ("SELECT * FROM pg_stat_activity", "pg_stat_activity"),
    ("SELECT * FROM information_schema.tables", "information_schema"),
    ("SELECT * FROM duckdb_databases()", "duckdb_databases"),
    ("SELECT * FROM rep", "'rep'"),
    ("SELECT * FROM rep_moments LIMIT 1", "rep_moments"),
    ("SELECT * FROM ingest_run", "ingest_run"),
    ("SELECT * FROM main.reps", "without a schema"),
    ("WITH rep AS (SELECT * FROM rep) SELECT * FROM rep", "'rep'"),  # a CTE cannot see itself
    ("SELECT * FROM (WITH rep AS (SELECT 1) SELECT * FROM rep) x, rep", "'rep'"),  # out of the CTE's scope
    ("SELECT pg_catalog.lower('x')", "qualified"),
    ("SELECT 'reps'::regclass", "regclass"),
    ("SELECT current_user", "current_user"),
    ("SELECT repeat('x', 2000000000)", "repeat"),
    ("SELECT sum(len(l)) FROM (SELECT list(range(0, 300000000)) AS l)", "not allowed"),
]


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_the_validator_allows_only_listed_parts(dialect):
    for query, named in ESCAPES:
        with pytest.raises(UnsafeQuery, match="not allowed") as info:
            check_select(query, dialect=dialect)
        assert named.lower() in str(info.value).lower(), (query, str(info.value))


def test_escapes_are_refused_through_db_sql(sdb):
    for query, _ in ESCAPES:
        with pytest.raises(UnsafeQuery):
            sdb.sql(query)


@pytest.mark.postgres
def test_postgresql_queries_hold_even_when_the_validator_is_bypassed(tmp_path, pg_url):
    """run_readonly is what runs after the validator: as the store's reader role, READ ONLY."""
    from actdb.store.sql_readonly import run_readonly

    db = actdb.open(str(tmp_path / "pg"), catalog_url=pg_url)
    db.add_dataset("d", ["a b", "c d"])
    db.write_rep("m", "final", "d", "hidden.0", np.ones((2, 3)), pooling="mean")
    limits = Limits()
    for query in ["SELECT query_to_xml('SELECT pg_read_file(''/etc/hostname'')', true, true, '')",
                  "SELECT pg_read_file('/etc/hostname')", "SELECT * FROM pg_ls_dir('.')", "SELECT * FROM rep",
                  "SELECT query_to_xml('SELECT * FROM rep', true, true, '')"]:
        with pytest.raises(InvalidInput, match="permission denied"):
            run_readonly(db.store, query, limits)
    with pytest.raises(InvalidInput, match=r"read-only transaction|permission denied"):
        run_readonly(db.store, "SELECT 1; DELETE FROM result", limits)
    role = run_readonly(db.store, "SELECT current_user AS u, current_setting('search_path') AS p", limits).to_pylist()
    assert role[0]["u"].startswith("actdb_reader_") and role[0]["p"] == pg_url.split("%3D")[1]
    assert run_readonly(db.store, "SELECT count(*) AS n FROM reps", limits).to_pylist() == [{"n": 1}]
    db.close()


def test_the_memory_heavy_query_is_stopped_cheaply(duck):
    """The issue's query ran 36 s to 15 GB; the aggregate form is stopped by memory_limit."""
    t0 = time.monotonic()
    with pytest.raises(InvalidInput, match=r"memory|time limit"):
        duck.sql("SELECT sum(len(l)) FROM (SELECT list(range) AS l FROM range(300000000))",
                timeout=2.0, memory_limit="200MB")
    assert time.monotonic() - t0 < 4.0
    t0 = time.monotonic()
    with pytest.raises(InvalidInput, match="time limit"):
        duck.sql("SELECT sum((a.range * 7) % 13) FROM range(30000000000) a", timeout=0.5)  # minutes of work
    assert time.monotonic() - t0 < 1.5


def test_results_are_capped_in_bytes(duck):
    with pytest.raises(InvalidInput, match="limit of 10,000 bytes"):
        duck.sql("SELECT md5(CAST(range AS VARCHAR)) AS h FROM range(5000)", max_bytes=10_000)
    assert duck.sql("SELECT count(*) AS n FROM reps", max_bytes=10_000).num_rows == 1


def test_db_sql_has_a_default_time_limit():
    import inspect

    assert inspect.signature(actdb.Database.sql).parameters["timeout"].default == 60.0
    with pytest.raises(InvalidInput, match="timeout"):
        Limits.parse(timeout=-1)


def test_what_were_tracebacks_are_one_line_errors(sdb):
    with pytest.raises(InvalidInput, match="nests parentheses 5000 deep"):
        sdb.sql("SELECT " + "(" * 5000 + "1" + ")" * 5000)
    with pytest.raises(InvalidInput, match=r"'d'.*infinity|date too large"):
        sdb.sql("SELECT 'infinity'::DATE AS d")
    with pytest.raises(UnsafeQuery):
        sdb.sql("SELECT * FROM pg_stat_activity")


HOLD = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1], read_only=True)
print("HOLDING", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_writer_kept_out_by_a_reader_is_not_told_writer(duck, tmp_path):
    duck.add_model("m")
    path = str(duck.path / "catalog.duckdb")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, path, "5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "HOLDING"
        with pytest.raises(StoreBusy) as info:
            actdb.open(str(duck.path), busy_timeout=0.5).add_model("second")
        message = str(info.value)
        assert f"reader pid {holder.pid}" in message and "writer pid" not in message
    finally:
        holder.kill()
        holder.communicate()
