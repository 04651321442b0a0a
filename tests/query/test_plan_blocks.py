"""Which blocks a plan accumulates (pairs=, the per-rep moments cache) and jackknife
standard errors through plans."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from query_data import N_EX, token_table

from actdb.errors import InvalidInput
from actdb.query import executor
from actdb.query import measures as M
from actdb.store import schema as S


@pytest.fixture
def passes(monkeypatch):
    """Every moments pass of the local executor: the rep-id blocks each accumulated."""
    seen: list[set[tuple[int, int]]] = []
    original = executor.moments_pass

    def spy(sources, *args, **kwargs):
        parts = original(sources, *args, **kwargs)
        ids = [s.array.rep_id for s in sources]
        seen.append({_block(ids[i], ids[j]) for i, j in parts[0].blocks})
        return parts

    monkeypatch.setattr(executor, "moments_pass", spy)
    return seen


def _ids(db, **filters):
    return {(r.checkpoint, r.layer): r.rep_id for r in db.reps(**filters)}


def _block(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a <= b else (b, a)


def _expected(values, row):
    x = values[(row["checkpoint_a"], row["layer_a"])].astype(np.float64)
    y = values[(row["checkpoint_b"], row["layer_b"])].astype(np.float64)
    return x, y


# ------------------------------------------------------------------- pairs=
def test_to_reference_accumulates_only_the_blocks_its_pairs_need(qdb, passes):
    db, values = qdb
    rows = db.reps(model="m").compare(pairs="to_reference", measure="linear_cka").compute().rows
    ids = _ids(db, model="m")
    assert len(passes) == 1
    want = {_block(ids[(ck, layer)], ids[("final", layer)]) for ck in ("step10", "step100") for layer in range(4)}
    want |= {(i, i) for i in ids.values()}
    assert passes[0] == want  # 12 diagonal + 8 cross blocks, not all 78
    for r in rows:
        assert r["value"] == pytest.approx(M.linear_cka(*_expected(values, r)), rel=1e-10)


def test_explain_counts_only_needed_blocks(qdb):
    db, _ = qdb
    every = db.reps(model="m").compare(measure="procrustes").explain(show=False)
    ref = db.reps(model="m").compare(pairs="to_reference", measure="procrustes").explain(show=False)

    def gflop(text):
        return float(text.split("estimated ")[1].split(" GFLOP")[0])

    n, d = N_EX * 9, 24
    assert gflop(every) == pytest.approx(n * (12 * d) ** 2 / 1e9, abs=0.006)
    assert gflop(ref) == pytest.approx(n * (12 * d * d + 2 * 8 * d * d) / 1e9, abs=0.006)


# ---------------------------------------------------------- per-rep moments cache
def test_adding_a_model_accumulates_only_its_blocks_and_the_cross_terms(qdb, passes):
    from query_data import fill

    db, values = qdb
    measures = ["linear_cka", "procrustes", "debiased_cka"]
    db.reps(model="m", checkpoint="final").compare(measure=measures).compute()
    assert len(passes) == 1 and len(passes[0]) == 4 + 6  # A among itself: every block
    with db.catalog.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(S.rep_moments)).scalar() == 4
    other = fill(db, model="other", seed=5, dataset="d")  # model B over the same texts
    passes.clear()
    plan = db.reps(checkpoint="final").compare(measure=measures)
    assert "own moments of 4 of 8 reps cached" in plan.explain(show=False)
    rows = plan.compute().rows
    a_ids = set(_ids(db, model="m", checkpoint="final").values())
    b_ids = set(_ids(db, model="other", checkpoint="final").values())
    assert len(passes) == 1
    want = {(b, b) for b in b_ids} | {_block(x, y) for x in b_ids for y in b_ids if x != y} \
        | {_block(x, y) for x in a_ids for y in b_ids}
    assert passes[0] == want  # no A diagonal, no A x A cross block
    assert sum(not r["cached"] for r in rows) == 3 * (64 - 16)
    for r in rows:
        src = values if r["model_a"] == "m" else other
        x = src[(r["checkpoint_a"], r["layer_a"])].astype(np.float64)
        src = values if r["model_b"] == "m" else other
        y = src[(r["checkpoint_b"], r["layer_b"])].astype(np.float64)
        assert r["value"] == pytest.approx(getattr(M, r["measure"])(x, y), rel=1e-10, abs=1e-12), r["measure"]
    with db.catalog.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(S.rep_moments)).scalar() == 8


def test_tiled_passes_accumulate_each_block_once(qdb, passes):
    db, _ = qdb
    plan = db.reps().compare(measure="linear_cka")
    tiled = plan.compute(memory_budget=60_000).values()
    assert len(passes) > 2  # tiled
    blocks = [b for p in passes for b in p]
    assert len(blocks) == len(set(blocks)) == 12 * 13 // 2  # own blocks too: later passes reuse the cache
    assert plan.compute(recompute=True).values() == pytest.approx(tiled, rel=1e-10)


def test_a_rep_with_itself_is_answered_from_the_cache_without_reading(qdb, reads):
    db, values = qdb
    sel = db.reps(checkpoint="step100")
    sel.compare(measure="procrustes", pairs="all").compute()
    reads.clear()
    rows = sel.compare(sel, measure=["svcca", "procrustes"], pairs="zip").compute().rows
    assert reads == {}  # every rep's own moments came from the cache
    for r in rows:
        x, y = _expected(values, r)
        assert r["value"] == pytest.approx(getattr(M, r["measure"])(x, y), rel=1e-9, abs=1e-10)


def test_overwriting_a_rep_drops_its_cached_moments(qdb):
    db, values = qdb

    def cached() -> dict[int, int]:
        with db.catalog.connect() as conn:
            query = sa.select(S.rep_moments.c.rep_id, sa.func.count()).group_by(S.rep_moments.c.rep_id)
            return dict(conn.execute(query).all())

    db.reps(checkpoint="final").compare(measure="linear_cka").compute()
    (old,) = db.reps(checkpoint="final", layer=2)
    assert cached().get(old.rep_id) == 1 and len(cached()) == 4
    x, y = values[("final", 1)], values[("final", 2)] * 2
    db.write_rep("m", "final", "d", "hidden.2", y, tokens=token_table(), tokenizer="tok", dtype="float32",
                 overwrite=True)
    assert old.rep_id not in cached() and len(cached()) == 3
    (new,) = db.reps(checkpoint="final", layer=2)
    (row,) = db.reps(checkpoint="final", layer=1).compare(db.reps(checkpoint="final", layer=2)).compute().rows
    assert new.rep_id != old.rep_id and row["rep_id_b"] == new.rep_id
    assert row["value"] == pytest.approx(M.linear_cka(x, y), rel=1e-10)


def test_rep_cache_is_keyed_by_row_space(qdb, passes):
    db, values = qdb
    sel = db.reps(checkpoint="final", layer=[0, 1])
    sel.compare(measure="linear_cka").compute()
    passes.clear()
    rows = sel.compare(measure="linear_cka", subset="position > 3").compute().rows
    assert passes and all((i, i) in passes[0] for i in {r["rep_id_a"] for r in rows})  # not reused
    keep = token_table()["position"] > 3
    for r in rows:
        x, y = _expected(values, r)
        assert r["value"] == pytest.approx(M.linear_cka(x[keep], y[keep]), rel=1e-10)


def test_cached_rep_moments_round_trip():
    from actdb.query.cache import pack, unpack
    from actdb.query.moments import Moments

    rng = np.random.default_rng(3)
    m = Moments.empty([5]).update([rng.standard_normal((40, 5)) + 3])
    back = unpack(pack(m))
    assert back.n == 40 and back.dims == (5,)
    np.testing.assert_allclose(back.pair(0, 0).sxx, m.pair(0, 0).sxx, rtol=1e-14)
    assert back.pair(0, 0).sum_kk == pytest.approx(m.pair(0, 0).sum_kk, rel=1e-14)
    with pytest.raises(InvalidInput, match="one-rep Moments"):
        pack(Moments.empty([2, 3]))


# --------------------------------------------------------------------- stderr
MOMENT_MEASURES = ["linear_cka", "debiased_cka", "procrustes", "mean_cca", "linear_regression", "pwcca"]


def test_plan_stderr_equals_the_function_api(qdb, reads):
    db, values = qdb
    plain = db.reps(checkpoint=["step10", "final"], layer=[1, 3]).compare(measure=MOMENT_MEASURES).compute()
    reads.clear()
    with_se = db.reps(checkpoint=["step10", "final"], layer=[1, 3]).compare(
        measure=MOMENT_MEASURES, stderr=True).compute()
    assert reads and set(reads.values()) == {1}  # still one read of each chunk
    assert not any(r["cached"] for r in with_se.rows)  # cached values had no stderr: recomputed
    assert with_se.values() == pytest.approx(plain.values(), rel=1e-10, abs=1e-12)
    for r in with_se.rows:
        x, y = _expected(values, r)
        value, se = getattr(M, r["measure"])(x, y, stderr=True)
        assert r["value"] == pytest.approx(value, rel=1e-10, abs=1e-12)
        assert r["stderr"] == pytest.approx(se, rel=1e-10, abs=1e-13), (r["measure"], r["layer_a"], r["layer_b"])
        if r["rep_id_a"] != r["rep_id_b"] and r["measure"] != "mean_cca":
            assert r["stderr"] > 0
    # stored in place: a later plan (with or without stderr) reads them from the cache
    again = db.reps(checkpoint=["step10", "final"], layer=[1, 3]).compare(measure=MOMENT_MEASURES).compute()
    assert all(r["cached"] for r in again.rows)
    assert [r["stderr"] for r in again.rows] == [r["stderr"] for r in with_se.rows]
    third = db.reps(checkpoint=["step10", "final"], layer=[1, 3]).compare(measure=MOMENT_MEASURES,
                                                                          stderr=True).compute()
    assert all(r["cached"] for r in third.rows) and third.values() == with_se.values()
    n = db.sql("SELECT count(*) AS n, count(stderr) AS se FROM results").to_pylist()[0]
    assert n["n"] == n["se"] == 4 * 10 + 2 * 16  # symmetric measures: one entry per unordered pair


def test_plan_stderr_on_a_subset_equals_the_function_api(qdb):
    db, values = qdb
    rows = db.reps(checkpoint="final", layer=[0, 2]).compare(
        subset="label = 'neg' OR position > 6", stderr=True).compute().rows
    t = token_table()
    neg = np.array(["pos" if i % 3 else "neg" for i in range(N_EX)]) == "neg"
    keep = neg[t["example"]] | (t["position"] > 6)
    for r in rows:
        x, y = _expected(values, r)
        value, se = M.linear_cka(x[keep], y[keep], stderr=True)
        assert r["n"] == keep.sum()
        assert r["value"] == pytest.approx(value, rel=1e-10)
        assert r["stderr"] == pytest.approx(se, rel=1e-10, abs=1e-13)


def test_plan_stderr_with_tiling_equals_untiled(qdb):
    db, _ = qdb
    plan = db.reps(layer=[0, 3]).compare(measure="linear_cka", stderr=True)
    whole = plan.compute()
    tiled = plan.compute(recompute=True, memory_budget=200_000)
    assert tiled.values() == pytest.approx(whole.values(), rel=1e-10)
    assert [r["stderr"] for r in tiled.rows] == pytest.approx([r["stderr"] for r in whole.rows], rel=1e-8, abs=1e-12)


def test_stderr_needs_moments_route_measures(qdb):
    db, _ = qdb
    with pytest.raises(InvalidInput, match="stderr=True is available for moments-route measures only; 'rbf_cka'"):
        db.reps().compare(measure=["linear_cka", "rbf_cka"], stderr=True)
    with pytest.raises(InvalidInput, match="stderr must be True or False"):
        db.reps().compare(stderr="yes")
    assert "stderr (jackknife)" in db.reps(layer=1).compare(stderr=True).explain(show=False)
