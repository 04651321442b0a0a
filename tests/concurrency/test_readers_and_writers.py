"""One ingest writing while four reader processes compare, query and read the same
DuckDB store (read-only opens): no reader errors, no partial rep ever read, every
reader's results equal a serial run. A second writer gets a clear StoreBusy naming the
writer's pid (not a hang). With a PostgreSQL catalog, two writers work at once."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from concurrency_kit import CONCURRENCY_SECONDS, spawn, tiny_bert

import actdb
from actdb.errors import StoreBusy

pytestmark = pytest.mark.slow
N, DIM = 400, 16


def _base(path, catalog_url=None):  # type: ignore[no-untyped-def]
    db = actdb.open(str(path), catalog_url=catalog_url)
    db.add_dataset("d", [f"t{i}" for i in range(N)])
    rng = np.random.default_rng(0)
    with db.session():
        for ck in ("a", "b"):
            for layer in range(3):
                db.write_rep("m", ck, "d", f"hidden.{layer}", rng.standard_normal((N, DIM)), pooling="mean")
    return db


def test_four_readers_and_an_ingest(tmp_path):
    store = tmp_path / "s"
    db = _base(store)
    reference = {"values": db.reps(model="m").compare(measure="linear_cka").compute(recompute=True).values(),
                 "rows": db.sql("SELECT checkpoint, site, n_rows, dim, checksum FROM reps WHERE model = 'm' "
                                "ORDER BY checkpoint, site").to_pylist()}
    with db.catalog.connect(write=True) as conn:  # readers must compute, not read the cache
        conn.exec_driver_sql("DELETE FROM result")
    db.close()
    (tmp_path / "ref.json").write_text(json.dumps(reference))
    model = tiny_bert(tmp_path / "tiny")
    writer = spawn("ingest", store, model, CONCURRENCY_SECONDS, tmp_path / "writer.json")
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "WRITING", writer.communicate()[1][-2000:]
    readers = [spawn("reader", store, CONCURRENCY_SECONDS, tmp_path / "ref.json", tmp_path / f"r{i}.json")
               for i in range(4)]
    try:
        for p in [writer, *readers]:
            _, err = p.communicate(timeout=CONCURRENCY_SECONDS + 240)
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in [writer, *readers]:
            if p.poll() is None:
                p.kill()
            p.communicate()
    w = json.loads((tmp_path / "writer.json").read_text())
    stats = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(4)]
    for s in stats:
        assert s["errors"] == [], s["errors"][:3]
        assert s["mismatches"] == [], s["mismatches"][:3]
        assert s["compares"] >= 1 and s["sqls"] >= 2
    assert w["checkpoints"] >= 1
    assert max(s["max_seen"] for s in stats) > 0, "the readers never saw the writer's reps"
    line = {"suite": "concurrency", "seconds": CONCURRENCY_SECONDS, "writer": w,
            "readers": [{k: s[k] for k in ("compares", "sqls", "reps_read")} for s in stats]}
    print(json.dumps(line))
    if os.environ.get("ACTDB_RELIABILITY_REPORT"):
        with open(os.environ["ACTDB_RELIABILITY_REPORT"], "a") as fh:
            fh.write(json.dumps(line) + "\n")
    after = actdb.open(str(store))
    assert after.verify().clean
    assert after.reps(model="m").compare(measure="linear_cka").compute().values() == reference["values"]


def test_a_second_writer_gets_store_busy_naming_the_pid(tmp_path):
    store = tmp_path / "s"
    _base(store).close()
    holder = spawn("hold", store, 6)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "HOLDING"
    t0 = time.monotonic()
    with pytest.raises(StoreBusy) as info:
        actdb.open(str(store), busy_timeout=1.0).add_model("second")
    waited = time.monotonic() - t0
    assert 0.9 <= waited < 5, waited
    assert f"writer pid {holder.pid}" in str(info.value) and "PostgreSQL" in str(info.value)
    with pytest.raises(StoreBusy, match=f"pid {holder.pid}"):
        actdb.open(str(store), read_only=True, busy_timeout=0.5)
    holder.communicate(timeout=60)
    assert holder.returncode == 0
    db = actdb.open(str(store))  # once the writer is gone, the store is free again
    assert db.add_model("second").name == "second"
    assert {m.name for m in db.models()} == {"m", "holder", "second"}


@pytest.mark.postgres
def test_two_writers_on_a_postgresql_catalog(tmp_path, pg_url):
    store = tmp_path / "s"
    _base(store, catalog_url=pg_url).close()
    procs = [spawn("write", store, model, 12, tmp_path / f"{model}.json") for model in ("wa", "wb")]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    spans = [json.loads((tmp_path / f"{m}.json").read_text())["spans"] for m in ("wa", "wb")]
    (a0, a1), (b0, b1) = (spans[0][0][0], spans[0][-1][1]), (spans[1][0][0], spans[1][-1][1])
    assert a0 < b1 and b0 < a1, "the two writers did not overlap in time"
    db = actdb.open(str(store))
    assert db.catalog.dialect == "postgresql"
    assert len(db.find_reps(model="wa")) == 12 and len(db.find_reps(model="wb")) == 12
    assert db.verify().clean
