"""POST /v1/probe: Selection.probe over HTTP (cached like compare, typed 4xx errors)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow.csv as pcsv
import pytest
from _server import API_KEY, Served, make_store, serve

import actdb


@pytest.fixture(scope="module")
def probe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, list[float]]]:
    store = make_store(tmp_path_factory.mktemp("probe") / "s", warm=False)
    db = actdb.open(str(store))
    expected = db.reps(checkpoint="final").probe(folds=3)["accuracy"].tolist()  # computed and cached here
    db.close()
    for served in serve(store, api_key=API_KEY):
        yield served, expected


def test_probe_returns_the_library_values_cached_then_computes_new_ones(probe_server):
    served, expected = probe_server
    with served.client() as c:
        r = c.post("/v1/probe", json={"a": "checkpoint=final", "folds": 3})
        assert r.status_code == 200, r.text
        rows = r.json()["rows"]
        assert [row["accuracy"] for row in rows] == expected and all(row["cached"] for row in rows)
        assert [row["layer"] for row in rows] == [0, 1, 2, 3] and rows[0]["n"] == 540 and rows[0]["step"] == 1000
        body = {"a": {"checkpoint": "final", "layer": [1]}, "folds": 4, "method": "ridge"}
        first = c.post("/v1/probe", json=body).json()["rows"]
        assert [row["cached"] for row in first] == [False]
        again = c.post("/v1/probe", json=body).json()["rows"]
        assert [row["cached"] for row in again] == [True] and again[0]["accuracy"] == first[0]["accuracy"]
        csv = c.post("/v1/probe", json=body, headers={"Accept": "text/csv"})
        assert csv.headers["content-type"].startswith("text/csv")
        assert pcsv.read_csv(io.BytesIO(csv.content)).column("accuracy").to_pylist() == [first[0]["accuracy"]]
        sql = c.post("/v1/sql", json={"query": "SELECT count(*) AS k FROM probes"}).json()
        assert sql["rows"][0]["k"] == 5


def test_probe_errors_are_json_4xx(probe_server):
    served, _ = probe_server
    with served.client() as c:
        r = c.post("/v1/probe", json={"a": "checkpoint=final", "label": "split"})
        assert r.status_code == 400 and "have none" in r.json()["error"]
        r = c.post("/v1/probe", json={"a": "model=nope"})
        assert r.status_code == 400 and "matches no reps" in r.json()["error"]
        r = c.post("/v1/probe", json={"a": "checkpoint=final", "folds": 61})
        assert r.status_code == 400 and "use folds <= 60" in r.json()["error"]
        for bad in ({"folds": 1}, {"label": "topic"}, {"method": "svm"}, {"ridge": -1}):
            r = c.post("/v1/probe", json={"a": "checkpoint=final", **bad})
            assert r.status_code == 422 and r.json()["type"] == "ValidationError", bad

