"""``dissim()`` inside SQL on both catalog backends: two phases (record, compute once,
rerun), the cached path, read-only stores, and PostgreSQL's lookup-only ``dissim``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from query_data import DIM, fill

import actdb
from actdb.errors import InvalidInput, NotFound, UnsafeQuery
from actdb.query import executor
from actdb.store import arrays

TRAJECTORY = ("SELECT a.step, a.layer, dissim('linear_cka', a.rep_id, b.rep_id) AS cka FROM reps a JOIN reps b "
              "ON a.layer = b.layer WHERE a.model = 'm' AND b.model = 'm' AND b.checkpoint = 'final' ORDER BY 1, 2")


@pytest.fixture
def sdb(tmp_path, monkeypatch, catalog_url):
    """The query-test store on each catalog backend."""
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 64 * DIM * 4)
    db = actdb.open(str(tmp_path / "q"), catalog_url=catalog_url)
    fill(db)
    yield db
    db.close()


@pytest.fixture
def plans(monkeypatch):
    calls: list[int] = []
    original = executor.run_plan
    monkeypatch.setattr(executor, "run_plan", lambda *a, **k: calls.append(len(a[1])) or original(*a, **k))
    return calls


def _expected(db):
    rows = db.reps(model="m").compare(pairs="to_reference").compute().rows
    return {(r["step_a"], r["layer_a"]): r["value"] for r in rows}


def test_dissim_computes_once_then_reads_the_cache(sdb, plans):
    table = sdb.sql(TRAJECTORY).to_pylist()
    assert plans == [12]  # every call of the statement in ONE plan
    expect = _expected(sdb)
    assert len(table) == 12
    for r in table:
        if r["step"] == 1000:
            assert r["cka"] == pytest.approx(1.0)
        else:
            assert r["cka"] == pytest.approx(expect[(r["step"], r["layer"])], rel=1e-12)
    plans.clear()
    assert sdb.sql(TRAJECTORY).to_pylist() == table
    assert plans == []  # fully cached: no plan at all
    # symmetric measures answer both orientations from one cached value
    flipped = sdb.sql(TRAJECTORY.replace("dissim('linear_cka', a.rep_id, b.rep_id)",
                                         "dissim('linear_cka', b.rep_id, a.rep_id)")).to_pylist()
    assert plans == [] and flipped == table


def test_dissim_leaves_literals_nulls_and_other_functions_alone(sdb, plans):
    q = ("SELECT 'dissim(x)' AS s, dissim(NULL, a.rep_id, a.rep_id) AS none, "
         "dissim('procrustes', a.rep_id, a.rep_id) AS self FROM reps a WHERE a.layer = 0 AND a.checkpoint = 'final'")
    rows = sdb.sql(q).to_pylist()
    assert rows == [{"s": "dissim(x)", "none": None, "self": pytest.approx(0.0, abs=1e-6)}]
    assert plans == [1]


def test_dissim_errors_name_the_problem(sdb):
    with pytest.raises(NotFound, match="did you mean 'linear_cka'"):
        sdb.sql("SELECT dissim('linear_ckaa', rep_id, rep_id) FROM reps")
    with pytest.raises(NotFound, match="no complete rep with id 99999"):
        sdb.sql("SELECT dissim('linear_cka', 99999, rep_id) FROM reps LIMIT 1")
    with pytest.raises(InvalidInput):
        sdb.sql("SELECT dissim('linear_cka', rep_id) FROM reps")
    with pytest.raises(UnsafeQuery):
        sdb.sql("SELECT dissim('linear_cka', rep_id, rep_id) FROM reps; DROP TABLE rep")


def test_dissim_on_a_read_only_store_computes_without_storing(sdb, plans):
    path, url = str(sdb.path), None if sdb.catalog.dialect == "duckdb" else sdb.catalog_url
    sdb.close()
    ro = actdb.open(path, catalog_url=url, read_only=True)
    try:
        table = ro.sql(TRAJECTORY).to_pylist()
        assert plans == [12] and all(r["cka"] is not None for r in table)
        assert ro.sql("SELECT count(*) AS n FROM results").to_pylist() == [{"n": 0}]
        writer_values = table
    finally:
        ro.close()
    again = actdb.open(path, catalog_url=url)
    stored = again.sql(TRAJECTORY).to_pylist()
    assert [r["cka"] for r in stored] == pytest.approx([r["cka"] for r in writer_values], rel=1e-12)
    again.close()


@pytest.mark.postgres
def test_postgres_lookup_only_dissim_for_bi_tools(pg_url, tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 64 * DIM * 4)
    db = actdb.open(str(tmp_path / "q"), catalog_url=pg_url)
    fill(db)
    ids = {(r.checkpoint, r.layer): r.rep_id for r in db.reps()}
    a, b = ids[("step10", 1)], ids[("final", 1)]
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    lookup = sa.text("SELECT dissim(:m, :a, :b)")
    with engine.connect() as conn:  # a BI tool's plain connection: nothing computed yet
        assert conn.execute(lookup, {"m": "linear_cka", "a": a, "b": b}).scalar() is None
    value = db.reps(rep_id=a).compare(db.reps(rep_id=b), measure=["linear_cka", "linear_regression"]).compute()
    cka, reg = value.values()
    with engine.connect() as conn:
        assert conn.execute(lookup, {"m": "linear_cka", "a": a, "b": b}).scalar() == cka
        assert conn.execute(lookup, {"m": "linear_cka", "a": b, "b": a}).scalar() == cka  # symmetric
        assert conn.execute(lookup, {"m": "linear_regression", "a": a, "b": b}).scalar() == reg
        assert conn.execute(lookup, {"m": "linear_regression", "a": b, "b": a}).scalar() is None  # not symmetric
        assert conn.execute(lookup, {"m": "rbf_cka", "a": a, "b": b}).scalar() is None
    # a non-default parameter is a different value: the lookup ignores it
    db.reps(rep_id=a).compare(db.reps(rep_id=b), measure="svcca", keep=0.5).compute()
    with engine.connect() as conn:
        assert conn.execute(lookup, {"m": "svcca", "a": a, "b": b}).scalar() is None
    engine.dispose()
    db.close()


def test_cached_values_follow_the_result_table(sdb, plans):
    first = sdb.sql(TRAJECTORY).to_pylist()
    sdb.sql(TRAJECTORY)  # cached (DuckDB: the values are remembered between queries)
    plans.clear()
    with sdb.catalog.connect(write=True) as conn:  # another writer drops one cached value
        gone = conn.exec_driver_sql("SELECT min(id) FROM result WHERE rep_a <> rep_b").scalar()
        conn.exec_driver_sql(f"DELETE FROM result WHERE id = {int(gone)}")
    assert sdb.sql(TRAJECTORY).to_pylist() == first
    assert plans == [1]  # the dropped value was noticed and computed again, alone


def test_large_caches_are_copied_inside_duckdb(duck, monkeypatch, plans):
    from actdb.store import sql_duckdb

    monkeypatch.setattr(arrays, "CHUNK_BYTES", 64 * DIM * 4)
    monkeypatch.setattr(sql_duckdb, "MEMO_ROWS", 0)  # every cache counts as large: no memo
    fill(duck)
    first = duck.sql(TRAJECTORY).to_pylist()
    assert plans == [12] and all(r["cka"] is not None for r in first)
    assert duck.sql(TRAJECTORY).to_pylist() == first and plans == [12]
