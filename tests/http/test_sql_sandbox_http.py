"""POST /v1/sql: what used to be 500s or ran past the limits is a 400 with one line, and
list/map columns come out of `Accept: text/csv` as JSON text."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

import actdb
from actdb.api.app import create_app


@pytest.fixture
def client(tmp_path):
    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", ["a b", "c d"])
    db.write_rep("m", "final", "d", "hidden.0", np.ones((2, 3)), pooling="mean")
    with TestClient(create_app(db, sql_timeout=2.0, sql_memory_limit="200MB", sql_max_bytes=10_000)) as c:
        yield c
    db.close()


@pytest.mark.parametrize("query, message", [
    ("SELECT " + "(" * 5000 + "1" + ")" * 5000, "nests parentheses"),
    ("SELECT 'infinity'::DATE AS d", "outside the years"),
    ("SELECT * FROM pg_stat_activity", "not allowed"),
    ("SELECT * FROM duckdb_databases()", "not allowed"),
    ("SELECT * FROM rep", "not allowed"),
    ("SELECT query_to_xml('SELECT 1', true, true, '')", "not allowed"),
    ("SELECT repeat('x', 2000000000)", "not allowed"),
    ("SELECT md5(CAST(range AS VARCHAR)) AS h FROM range(5000)", "10,000 bytes"),
])
def test_refused_with_one_line(client, query, message):
    r = client.post("/v1/sql", json={"query": query})
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_the_memory_heavy_request_stops_within_the_limits(client):
    t0 = time.monotonic()
    r = client.post("/v1/sql",
                    json={"query": "SELECT sum(len(l)) FROM (SELECT list(range) AS l FROM range(300000000))"})
    assert r.status_code == 400 and ("memory" in r.json()["error"] or "time limit" in r.json()["error"]), r.text
    assert time.monotonic() - t0 < 4.0


def test_csv_with_list_and_map_columns(client):
    r = client.post("/v1/sql", json={"query": "SELECT [1, 2] AS l, map([1], ['a']) AS m"},
                    headers={"Accept": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.text.splitlines() == ['"l","m"', '"[1, 2]","{""1"": ""a""}"']
