"""Arrays on S3 (moto server), catalog on PostgreSQL, queries on a dask cluster of worker
processes: ingest, write_rep, compare and SQL work end to end, verify (including its
orphan scan) works on the object store, and every result equals the same work done in a
local embedded store (DuckDB catalog, arrays on disk, local executor)."""

from __future__ import annotations

import numpy as np
import pytest
from reliability_kit import tiny_bert

import actdb

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
TEXTS = [f"sentence number {i} talks about {w}" for i, w in enumerate(["cats", "dogs", "rain", "maps"] * 4)]


def _fill(db: actdb.Database, model_dir) -> None:  # type: ignore[no-untyped-def]
    from actdb.store import arrays

    db.ingest(str(model_dir), "docs", texts=TEXTS, name="tiny", sites=["hidden.*"], pooling="token,mean",
              batch_size=4, max_length=16, quiet=True)
    rng = np.random.default_rng(3)
    old = arrays.CHUNK_BYTES
    arrays.CHUNK_BYTES = 1024  # several shards a rep: the dask workers split rows
    try:
        db.add_dataset("big", [f"t{i}" for i in range(2000)])
        for step in (1, 2):
            for layer in range(3):
                db.write_rep("syn", f"step{step}", "big", f"hidden.{layer}", rng.standard_normal((2000, 8)),
                             pooling="mean", dtype="float32")
    finally:
        arrays.CHUNK_BYTES = old


def _sql(db: actdb.Database) -> list[dict]:
    return db.sql("SELECT model, checkpoint, dataset, site, pooling, n_rows, dim, checksum FROM reps "
                  "ORDER BY model, checkpoint, dataset, site, pooling").to_pylist()


def test_s3_postgres_dask_end_to_end(tmp_path, s3, pg_url, cluster):
    import s3fs

    model = tiny_bert(tmp_path / "tiny")
    local = actdb.open(str(tmp_path / "local"))
    _fill(local, model)
    url = f"{s3}/team/store1"
    remote = actdb.open(str(tmp_path / "deployed"), catalog_url=pg_url, arrays_url=url)
    assert remote.catalog.dialect == "postgresql" and remote.arrays_location == url
    assert not (tmp_path / "deployed" / "arrays").exists()
    _fill(remote, model)

    # the arrays are objects in the bucket, laid out as on disk
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    keys = fs.find(url.removeprefix("s3://"))
    assert any(k.endswith("reps/000000001/zarr.json") for k in keys) and len(keys) > 20

    # byte-identical reps, same catalog rows (ids may differ: compare by identity)
    assert _sql(remote) == _sql(local)
    for a, b in zip(local.find_reps(), remote.find_reps()):
        assert (local.read_rep(a).read_stored(0, a.n_rows).tobytes()
                == remote.read_rep(b).read_stored(0, b.n_rows).tobytes())

    # compare on the dask cluster (2 worker processes reading from S3) == local executor, local store
    sel = {"model": "syn", "dataset": "big"}
    want = local.reps(**sel).compare(measure=["linear_cka", "procrustes"]).compute()
    got = remote.reps(**sel).compare(measure=["linear_cka", "procrustes"]).compute(executor="dask", address=cluster)
    assert len(got) == len(want) == 2 * 6 * 6
    np.testing.assert_allclose(got.values(), want.values(), rtol=0, atol=1e-10)
    tok_want = local.reps(model="tiny", pooling="token").compare().compute().values()
    tok_got = remote.reps(model="tiny", pooling="token").compare().compute(executor="dask", address=cluster).values()
    np.testing.assert_allclose(tok_got, tok_want, rtol=0, atol=1e-10)

    # SQL over the PostgreSQL catalog views: results cached by the dask run are there
    rows = remote.sql("SELECT measure, count(*) AS n FROM dissimilarities GROUP BY measure "
                      "ORDER BY measure").to_pylist()
    assert {r["measure"]: r["n"] for r in rows}["procrustes"] >= 15

    # a reader elsewhere: a second handle, read-only, same answers from the cache
    reader = actdb.open(str(tmp_path / "deployed"), read_only=True)
    assert reader.reps(**sel).compare(measure="linear_cka").compute().values() == got.values("linear_cka")

    # verify on the object store: clean; an orphan object and a damaged shard are found and repaired
    assert remote.verify().clean
    fs.pipe(f"{url.removeprefix('s3://')}/reps/999999999/c/0/0", b"junk")
    victim = remote.find_reps(model="syn")[0]
    shard = f"{url.removeprefix('s3://')}/{victim.path}/c/0/0"
    fs.pipe(shard, fs.cat(shard)[:-7])
    report = remote.verify()
    assert {(p.kind, p.rep_id) for p in report.problems} == {("orphan", None), ("corrupt", victim.id)}
    fixed = remote.verify(repair=True)
    assert fixed.clean, fixed.problems
    assert remote.rep(victim.id).status == "corrupt"
    fs.invalidate_cache()
    assert not fs.exists(f"{url.removeprefix('s3://')}/reps/999999999")
    assert remote.verify().clean
