"""GET /v1/reps/{id}/rows (Arrow IPC, row and byte limits) and GET /v1/reps/{id}/tokens."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

import actdb
from actdb.api import create_app

KEY = "rows-key-0123456789"
N, D = 10, 6
TOKENS = {"example": [0, 0, 0, 1, 1, 2, 2, 2, 2, 3], "position": [0, 1, 2, 0, 1, 0, 1, 2, 3, 0],
          "token_id": list(range(10, 20)), "char_start": [0, 2, 4, 0, 2, 0, 2, 4, 6, 0],
          "char_end": [1, 3, 5, 1, 3, 1, 3, 5, 7, 1]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, np.ndarray], dict]]:
    db = actdb.open(str(tmp_path_factory.mktemp("rows") / "s"))
    db.add_dataset("d", ["a b c", "d e", "f g h i", "j"], labels=["x", "y", "x", "z"])
    db.add_checkpoint("m", "final", step=5)
    rng = np.random.default_rng(0)
    values = {"token": rng.standard_normal((N, D)).astype(np.float16),
              "mean": rng.standard_normal((4, D)).astype(np.float32)}
    db.write_rep("m", "final", "d", "hidden.1", values["token"], tokens=TOKENS, tokenizer="t")
    db.write_rep("m", "final", "d", "hidden.1", values["mean"], pooling="mean", dtype="float32")
    ids = {r.pooling: r.rep_id for r in db.reps()}
    # 4 rows a request, 48 bytes: 4 float16 rows of 6 (48 B) fit, 3 float32 rows of 6 (72 B) do not
    app = create_app(db, api_key=KEY, rows_max=4, rows_max_bytes=48)
    with TestClient(app, headers={"X-API-Key": KEY}) as client:
        yield client, values, ids
    db.close()


def _read(body: bytes) -> tuple[pa.Table, np.ndarray]:
    table = pa.ipc.open_stream(body).read_all()
    dim = int(table.schema.metadata[b"actdb.dim"])
    return table, table.column("values").combine_chunks().flatten().to_numpy().reshape(-1, dim)


def test_rows_come_back_as_arrow_in_the_stored_precision(store):
    client, values, ids = store
    got = client.get(f"/v1/reps/{ids['token']}/rows", params={"start": 3, "stop": 7})
    assert got.status_code == 200 and got.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table, rows = _read(got.content)
    assert table.column("row").to_pylist() == [3, 4, 5, 6]
    assert rows.dtype == np.float16 and np.array_equal(rows, values["token"][3:7])
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["actdb.model"] == "m" and meta["actdb.site"] == "hidden.1" and meta["actdb.n_rows"] == str(N)
    assert meta["actdb.start"] == "3" and meta["actdb.stop"] == "7"
    tail = client.get(f"/v1/reps/{ids['token']}/rows", params={"start": 8})  # stop defaults to the end
    assert np.array_equal(_read(tail.content)[1], values["token"][8:])
    empty = client.get(f"/v1/reps/{ids['token']}/rows", params={"start": 10, "stop": 10})
    assert _read(empty.content)[1].shape == (0, D)
    pooled = client.get(f"/v1/reps/{ids['mean']}/rows", params={"start": 1, "stop": 3})
    assert np.array_equal(_read(pooled.content)[1], values["mean"][1:3])


def test_row_and_byte_limits_are_413_with_a_range_that_fits(store):
    client, _, ids = store
    too_many = client.get(f"/v1/reps/{ids['token']}/rows", params={"start": 0, "stop": 5})
    assert too_many.status_code == 413
    assert too_many.json()["type"] == "TooLarge"
    assert "5 rows, more than this server sends at once (4)" in too_many.json()["error"]
    assert "start=0&stop=4" in too_many.json()["error"]
    whole = client.get(f"/v1/reps/{ids['token']}/rows")  # all 10 rows by default: over the limit
    assert whole.status_code == 413
    too_big = client.get(f"/v1/reps/{ids['mean']}/rows", params={"start": 0, "stop": 3})
    assert too_big.status_code == 413
    message = too_big.json()["error"]
    assert "72 bytes" in message and "(48 bytes)" in message and "at most 2 rows" in message


def test_bad_ranges_and_unknown_reps(store):
    client, _, ids = store
    out = client.get(f"/v1/reps/{ids['token']}/rows", params={"start": 2, "stop": 11})
    assert out.status_code == 400 and "out of range: the rep has 10 rows" in out.json()["error"]
    backwards = client.get(f"/v1/reps/{ids['token']}/rows", params={"start": 4, "stop": 2})
    assert backwards.status_code == 400 and "start=4 is after stop=2" in backwards.json()["error"]
    negative = client.get(f"/v1/reps/{ids['token']}/rows", params={"start": -1})
    assert negative.status_code == 422
    missing = client.get("/v1/reps/999/rows")
    assert missing.status_code == 404
    assert missing.json()["error"] == ("no complete rep with id 999 in this store; list the reps and their ids "
                                       "with GET /v1/reps")
    assert client.get("/v1/reps/999/tokens").status_code == 404


def test_rows_need_the_api_key(store):
    client, _, ids = store
    bare = TestClient(client.app)
    assert bare.get(f"/v1/reps/{ids['token']}/rows", params={"stop": 1}).status_code == 401
    assert bare.get(f"/v1/reps/{ids['token']}/tokens").status_code == 401


def test_tokens_as_json_csv_and_arrow(store):
    client, _, ids = store
    page = client.get(f"/v1/reps/{ids['token']}/tokens", params={"limit": 4, "offset": 2}).json()
    assert page["total"] == N and page["next_offset"] == 6 and [r["row"] for r in page["rows"]] == [2, 3, 4, 5]
    first = page["rows"][0]
    assert (first["example"], first["position"], first["token_id"], first["char_start"], first["char_end"],
            first["label"]) == (0, 2, 12, 4, 5, "x")
    assert page["rows"][1]["label"] == "y"
    last = client.get(f"/v1/reps/{ids['token']}/tokens", params={"offset": 8}).json()
    assert last["next_offset"] is None and len(last["rows"]) == 2
    first_page = client.get(f"/v1/reps/{ids['token']}/tokens").json()  # default limit: at most rows_max (4)
    assert first_page["limit"] == 4 and len(first_page["rows"]) == 4 and first_page["next_offset"] == 4
    assert client.get(f"/v1/reps/{ids['token']}/tokens", params={"limit": 5}).status_code == 422
    text = client.get(f"/v1/reps/{ids['token']}/tokens", params={"format": "csv", "offset": 6})
    assert text.headers["content-type"].startswith("text/csv") and text.headers["x-total-count"] == str(N)
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert [int(r["token_id"]) for r in rows] == TOKENS["token_id"][6:10]
    arrow = client.get(f"/v1/reps/{ids['mean']}/tokens", headers={"Accept": "application/vnd.apache.arrow.stream"})
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.column_names == ["row", "example", "label", "split"]
    assert table.column("label").to_pylist() == ["x", "y", "x", "z"]
    past = client.get(f"/v1/reps/{ids['token']}/tokens", params={"offset": 11})
    assert past.status_code == 400 and "past the rep's 10 rows" in past.json()["error"]
