"""The HTTP API against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from _server import API_KEY, make_store, query_fixtures, serve

from actdb.query.measures import linear_cka


def test_healthz_needs_no_key_and_v1_needs_it(served):
    with served.client(key=False) as c:
        r = c.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        for path in ("/v1/models", "/v1/reps", "/v1/results", "/v1/checkpoints"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.json()["type"] == "HTTPError" and "X-API-Key" in r.json()["error"]
        r = c.get("/v1/models", headers={"X-API-Key": API_KEY[:-1] + "x"})
        assert r.status_code == 401
        r = c.post("/v1/sql", json={"query": "SELECT 1"})
        assert r.status_code == 401
    with served.client() as c:
        assert c.get("/v1/models").json() == [
            {"id": 1, "name": "m", "family": None, "architecture": None, "width": None, "depth": None}]
        assert c.get("/openapi.json").status_code == 200


def test_catalog_routes_and_filters(served):
    with served.client() as c:
        cks = c.get("/v1/checkpoints", params={"model": "m"}).json()
        assert [(x["name"], x["step"]) for x in cks] == [("step10", 10), ("step100", 100), ("final", 1000)]
        reps = c.get("/v1/reps", params={"checkpoint": "step1*", "layer": "1:3"}).json()
        assert [(r["checkpoint"], r["layer"]) for r in reps] == [("step10", 1), ("step10", 2),
                                                                 ("step100", 1), ("step100", 2)]
        assert all(r["n_rows"] == 540 and r["dim"] == 24 for r in reps)
        r = c.get("/v1/reps", params={"layer": "two"})
        assert r.status_code == 400 and "layer" in r.json()["error"] and r.json()["type"] == "InvalidInput"
        r = c.get("/v1/checkpoints", params={"model": "nope"})
        assert r.status_code == 404 and r.json()["type"] == "NotFound"


def test_compare_json_csv_arrow_match_the_library(served):
    q = query_fixtures()
    values = q.make_values(0)
    body = {"a": "checkpoint=final", "b": {"checkpoint": "step10", "layer": [0, 2]}, "measure": "linear_cka",
            "pairs": "same_layer"}
    with served.client() as c:
        rows = c.post("/v1/compare", json=body).json()["rows"]
        assert [(r["layer_a"], r["layer_b"]) for r in rows] == [(0, 0), (2, 2)]
        for r in rows:
            want = linear_cka(values[("final", r["layer_a"])].astype(np.float64), values[("step10", r["layer_b"])])
            assert r["value"] == pytest.approx(want, rel=1e-9)
            assert r["n"] == 540 and r["kind"] == "similarity"
        csv = c.post("/v1/compare", json=body, headers={"Accept": "text/csv"})
        assert csv.headers["content-type"].startswith("text/csv")
        table = pcsv.read_csv(io.BytesIO(csv.content))
        assert table.column("value").to_pylist() == pytest.approx([r["value"] for r in rows])
        arrow = c.post("/v1/compare", json=body, headers={"Accept": "application/vnd.apache.arrow.stream"})
        t = pa.ipc.open_stream(arrow.content).read_all()
        assert t.num_rows == 2 and t.column("cached").to_pylist() == [True, True]


def test_compare_with_stderr_matches_the_function_api(served):
    q = query_fixtures()
    values = q.make_values(0)
    body = {"a": "checkpoint=final,layer=1", "b": "checkpoint=step100,layer=1", "measure": "linear_cka",
            "pairs": "same_layer", "stderr": True}
    with served.client() as c:
        (row,) = c.post("/v1/compare", json=body).json()["rows"]
        want, want_se = linear_cka(values[("final", 1)].astype(np.float64), values[("step100", 1)], stderr=True)
        assert row["value"] == pytest.approx(want, rel=1e-9)
        assert row["stderr"] == pytest.approx(want_se, rel=1e-6)
        r = c.post("/v1/compare", json={**body, "measure": "rsa"})
        assert r.status_code == 400 and "stderr" in r.json()["error"]


def test_compare_errors_are_json_4xx(served):
    with served.client() as c:
        r = c.post("/v1/compare", json={"a": "checkpoint=final,layer", "measure": "linear_cka"})
        assert r.status_code == 400 and "'layer'" in r.json()["error"]
        r = c.post("/v1/compare", json={"a": "checkpoint=final", "measure": "linear_ckaa"})
        assert r.status_code == 404 and "did you mean 'linear_cka'" in r.json()["error"]
        r = c.post("/v1/compare", json={"a": "checkpoint=final", "pairs": "diagonal"})
        assert r.status_code == 400 and "same_layer" in r.json()["error"]
        r = c.post("/v1/compare", json={"a": "checkpoint=final", "measure": "knn_overlap", "params": {"k": "ten"}})
        assert r.status_code == 400 and "k='ten'" in r.json()["error"]
        r = c.post("/v1/compare", json={"a": 5})
        assert r.status_code == 422 and r.json()["type"] == "ValidationError"
        r = c.post("/v1/compare", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422
        r = c.post("/v1/compare", json={"a": "checkpoint=final", "subset": "1; DROP TABLE rep"})
        assert r.status_code == 400 and r.json()["type"] == "UnsafeQuery"


def test_same_uncomputed_pair_is_computed_once(served):
    body = {"a": "checkpoint=step100,layer=3", "b": "checkpoint=step10,layer=1", "measure": "procrustes"}
    gate = served.app.state.gate
    before = gate.computations
    barrier = threading.Barrier(6)
    out: list[dict] = []

    def ask() -> None:
        with served.client() as c:
            barrier.wait()
            out.append(c.post("/v1/compare", json=body).json()["rows"][0])

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 6 and len({r["value"] for r in out}) == 1
    assert sum(not r["cached"] for r in out) == 1
    assert gate.computations == before + 1
    with served.client() as c:
        # a symmetric measure's pair is stored once, lower rep id first
        page = c.get("/v1/results", params={"measure": "procrustes", "checkpoint_a": "step10", "layer_a": "1",
                                            "checkpoint_b": "step100", "layer_b": "3"}).json()
        assert page["total"] == 1


def test_results_filters_pages_and_csv(served):
    with served.client() as c:
        everything = c.get("/v1/results", params={"limit": 10_000}).json()
        n = everything["total"]
        assert n >= 20 and len(everything["rows"]) == n and everything["next_offset"] is None
        page = c.get("/v1/results", params={"limit": 7, "offset": 7}).json()
        assert [r["result_id"] for r in page["rows"]] == [r["result_id"] for r in everything["rows"][7:14]]
        assert page["next_offset"] == 14
        sub = c.get("/v1/results", params={"measure": "linear_cka", "layer_a": "0:2", "site_b": "hidden.*"}).json()
        assert sub["rows"] and all(r["measure"] == "linear_cka" and r["layer_a"] in (0, 1) for r in sub["rows"])
        want = [r for r in everything["rows"] if r["measure"] == "linear_cka" and r["layer_a"] in (0, 1)]
        assert sub["total"] == len(want)
        csv = c.get("/v1/results", params={"format": "csv", "measure": "procrustes"})
        assert csv.headers["content-type"].startswith("text/csv")
        table = pcsv.read_csv(io.BytesIO(csv.content))
        assert table.num_rows == int(csv.headers["x-total-count"]) > 0
        assert set(table.column("measure").to_pylist()) == {"procrustes"}
        r = c.get("/v1/results", params={"layer_a": "1,2"})  # outside the filter syntax's characters
        assert r.status_code == 422 and "layer_a" in r.json()["error"]
        r = c.get("/v1/results", params={"layer_a": "x:y"})
        assert r.status_code == 400 and "whole numbers" in r.json()["error"]
        r = c.get("/v1/results", params={"colour": "red"})  # unknown query params are ignored, like any API
        assert r.status_code == 200
        r = c.get("/v1/results", params={"limit": 0})
        assert r.status_code == 422 and r.json()["type"] == "ValidationError"


def test_sql_limits_and_read_only(served):
    with served.client() as c:
        r = c.post("/v1/sql", json={"query": "SELECT model, count(*) AS n FROM reps GROUP BY model"})
        assert r.json() == {"columns": ["model", "n"], "rows": [{"model": "m", "n": 12}]}
        r = c.post("/v1/sql", json={"query": "SELECT rep_id FROM reps ORDER BY rep_id LIMIT 3"},
                   headers={"Accept": "text/csv"})
        assert r.text.split() == ['"rep_id"', "1", "2", "3"]
        # row limit: the server's (100) caps what a request asks for
        r = c.post("/v1/sql", json={"query": "SELECT * FROM tokens", "max_rows": 10_000})
        assert r.status_code == 400 and "more than 100 rows" in r.json()["error"]
        r = c.post("/v1/sql", json={"query": "SELECT * FROM tokens", "max_rows": 5})
        assert r.status_code == 400 and "more than 5 rows" in r.json()["error"]
        # time limit: the server's (1 s) caps the request's; a long query is stopped
        t = time.perf_counter()
        r = c.post("/v1/sql", json={"query": "SELECT count(*) FROM range(100000000) a, range(100000000) b "
                                             "WHERE a.range * 7 = b.range + 1", "timeout": 60})
        assert r.status_code == 400 and "time limit" in r.json()["error"]
        assert time.perf_counter() - t < 15
        r = c.post("/v1/sql", json={"query": "DELETE FROM rep"})
        assert r.status_code == 400 and r.json()["type"] == "UnsafeQuery"
        r = c.post("/v1/sql", json={"query": "SELECT * FROM read_csv('/etc/passwd')"})
        assert r.status_code == 400 and "not allowed" in r.json()["error"]
        # the server still works after SQL (its kept catalog connection was reopened)
        assert c.get("/v1/models").status_code == 200


def test_sql_interleaved_with_compare(served):
    errors: list[str] = []

    def hammer(kind: str) -> None:
        with served.client() as c:
            for _ in range(8):
                if kind == "sql":
                    r = c.post("/v1/sql", json={"query": "SELECT count(*) AS n FROM dissimilarities"})
                else:
                    r = c.post("/v1/compare", json={"a": "checkpoint=final", "measure": "linear_cka"})
                if r.status_code != 200:
                    errors.append(f"{kind}: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=hammer, args=(k,)) for k in ("sql", "compare", "sql", "compare")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_plot_heatmap_png(served):
    with served.client() as c:
        r = c.get("/v1/plot/heatmap.png", params={"a": "checkpoint=final", "b": "checkpoint=step10"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and len(r.content) > 10_000
        r = c.get("/v1/plot/trajectory.png", params={"a": "model=m", "reference": "final"})
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
        r = c.get("/v1/plot/heatmap.png", params={"a": "model=nobody"})
        assert r.status_code == 400 and "nothing to plot" in r.json()["error"]


def test_read_only_server_computes_but_caches_nothing(tmp_path):
    store = make_store(tmp_path / "ro", warm=False)
    for srv in serve(store, read_only=True):
        with srv.client() as c:
            assert c.get("/v1/info").json()["read_only"] is True
            rows = c.post("/v1/compare", json={"a": "checkpoint=final,layer=0:2"}).json()["rows"]
            assert len(rows) == 4 and not any(r["cached"] for r in rows)
            assert c.get("/v1/results").json()["total"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_actdb_serve_command_with_key_from_environment(tmp_path):
    import httpx

    store = make_store(tmp_path / "cli", warm=True)
    port = _free_port()
    env = {**os.environ, "ACTDB_API_KEY": "from-env"}
    proc = subprocess.Popen([sys.executable, "-m", "actdb", "serve", str(store), "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "actdb serve did not come up"
            time.sleep(0.1)
        assert httpx.get(url + "/v1/results").status_code == 401
        r = httpx.get(url + "/v1/results", headers={"X-API-Key": "from-env"}, params={"measure": "procrustes"})
        assert r.status_code == 200 and r.json()["total"] == 10  # 4 x 4 pairs, symmetric: stored once
        assert httpx.get(url + "/docs").status_code == 401  # the docs follow the API's key rule
        assert httpx.get(url + "/docs", headers={"X-API-Key": "from-env"}).status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
