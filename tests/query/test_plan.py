"""Selections, plans, the executor and the results cache."""

from __future__ import annotations

import numpy as np
import pytest
from query_data import N_EX, TOK_PER_EX, token_table

from actdb.errors import InvalidInput, UnsafeQuery
from actdb.query import measures as M
from actdb.query import parse_filter_string


def test_selection_filters(qdb):
    db, _ = qdb
    assert len(db.reps()) == 12
    assert [r.step for r in db.reps(checkpoint="step*", layer=2)] == [10, 100]
    assert {r.layer for r in db.reps(layer=slice(1, 3))} == {1, 2}
    assert {r.step for r in db.reps(step=range(0, 200, 100))} == {100}  # 10 is not on the stride
    assert {r.step for r in db.reps(step=range(0, 1001, 100))} == {100, 1000}
    assert {r.site for r in db.reps(site=["hidden.0", "hidden.3"], checkpoint="final")} == {"hidden.0", "hidden.3"}
    with pytest.raises(InvalidInput, match="unknown filter 'modle'"):
        db.reps(modle="m")
    with pytest.raises(InvalidInput, match="whole number"):
        db.reps(layer="two")


def test_filter_strings_name_the_bad_token():
    assert parse_filter_string("model=m,checkpoint=step*,layer=2:6") == {
        "model": "m", "checkpoint": "step*", "layer": slice(2, 6)}
    assert parse_filter_string("layer=1|3") == {"layer": [1, 3]}
    with pytest.raises(InvalidInput, match="bad filter token 'layer'"):
        parse_filter_string("model=m,layer")
    with pytest.raises(InvalidInput, match="bad filter token \"site=x' OR 1=1\""):
        parse_filter_string("site=x' OR 1=1")
    with pytest.raises(InvalidInput, match="unknown key 'colour'"):
        parse_filter_string("colour=red")


def test_building_and_explaining_reads_nothing_computing_reads_each_chunk_once(qdb, reads):
    db, _ = qdb
    sel = db.reps(checkpoint="final")
    plan = sel.compare(measure=["linear_cka", "procrustes", "mean_cca"])
    list(sel), len(sel)
    text = plan.explain(show=False)
    assert "16 pairs x 3 measure(s)" in text and "cached: 0 of 48" in text and "4 reps" in text
    assert reads == {}
    plan.compute()
    assert reads and set(reads.values()) == {1}  # every chunk decoded exactly once
    assert len({p for p, _ in reads}) == 4
    assert len(reads) == 4 * -(-N_EX * TOK_PER_EX // 64)


@pytest.mark.parametrize("measure", ["linear_cka", "debiased_cka", "procrustes", "mean_cca", "svcca", "pwcca",
                                     "linear_regression", "gulp", "rbf_cka", "rsa", "knn_overlap"])
def test_plan_values_equal_the_measure_functions(qdb, measure):
    db, values = qdb
    rows = db.reps(checkpoint=["step10", "final"], layer=[1, 3]).compare(measure=measure).compute().rows
    assert len(rows) == 16
    for r in rows:
        x = values[(r["checkpoint_a"], r["layer_a"])].astype(np.float64)
        y = values[(r["checkpoint_b"], r["layer_b"])].astype(np.float64)
        expect = getattr(M, measure)(x, y)
        assert r["value"] == pytest.approx(expect, rel=1e-10, abs=1e-12), (r["checkpoint_a"], r["layer_a"])


def test_second_query_is_served_from_the_cache(qdb, reads):
    db, _ = qdb
    plan = db.reps(layer=2).compare(measure=["linear_cka", "rbf_cka"])
    first = plan.compute()
    reads.clear()
    second = plan.compute()
    assert reads == {}
    assert second.values() == first.values()
    assert all(r["cached"] for r in second.rows) and not any(r["cached"] for r in first.rows)
    assert "cached: 18 of 18" in plan.explain(show=False)
    n = db.sql("SELECT count(*) AS n FROM results").column("n")[0].as_py()
    assert n == 12  # symmetric measures: (a, b) and (b, a) share one cached value
    again = plan.compute(recompute=True)
    assert again.values() == pytest.approx(first.values(), rel=1e-12)


def test_pairing_modes(qdb):
    db, _ = qdb
    same = db.reps(checkpoint="step10").compare(db.reps(checkpoint="final"), pairs="same_layer").compute().rows
    assert [(r["layer_a"], r["layer_b"]) for r in same] == [(i, i) for i in range(4)]
    consec = db.reps(layer=1).compare(pairs="consecutive").compute().rows
    assert [(r["step_a"], r["step_b"]) for r in consec] == [(10, 100), (100, 1000)]
    ref = db.reps(site="hidden.*").compare(pairs="to_reference:final").compute().rows
    assert len(ref) == 8 and all(r["checkpoint_b"] == "final" and r["layer_a"] == r["layer_b"] for r in ref)
    zipped = db.reps(checkpoint="step10").compare(db.reps(checkpoint="final"), pairs="zip").compute().rows
    assert len(zipped) == 4
    with pytest.raises(InvalidInput, match="equal size"):
        db.reps(checkpoint="step10").compare(db.reps(), pairs="zip").pair_list()
    with pytest.raises(InvalidInput, match="no reps at reference checkpoint 'last'"):
        db.reps().compare(pairs="to_reference", reference="last").pair_list()
    with pytest.raises(InvalidInput, match="pairing mode"):
        db.reps().compare(pairs="diagonal")


def test_bad_measures_and_params(qdb):
    db, _ = qdb
    with pytest.raises(KeyError, match="did you mean 'linear_cka'"):
        db.reps().compare(measure="linear_ckaa")
    with pytest.raises(InvalidInput, match="parameter 'sigmaa'"):
        db.reps().compare(measure="rbf_cka", sigmaa=0.5)


def test_subset_equals_manual_subset(qdb):
    db, values = qdb
    rows = db.reps(checkpoint="final", layer=[0, 2]).compare(
        subset="label = 'neg' AND position > 2", measure="linear_cka").compute().rows
    t = token_table()
    neg = np.array([lab == "neg" for lab in (["pos" if i % 3 else "neg" for i in range(N_EX)])])
    keep = neg[t["example"]] & (t["position"] > 2)
    for r in rows:
        x = values[("final", r["layer_a"])][keep].astype(np.float64)
        y = values[("final", r["layer_b"])][keep].astype(np.float64)
        assert r["n"] == keep.sum()
        assert r["value"] == pytest.approx(M.linear_cka(x, y), rel=1e-10)
    # the subset is part of the cache key: the full-rows value is a different entry
    full = db.reps(checkpoint="final", layer=[0, 2]).compare(measure="linear_cka").compute().rows
    assert full[1]["value"] != rows[1]["value"]


@pytest.mark.parametrize("predicate", [
    "1=1; DROP TABLE rep", "example IN (SELECT example FROM example)", "read_csv('/etc/passwd') IS NULL",
    "getenv('HOME') = 'x'", "COPY rep TO '/tmp/x'", "ATTACH '/tmp/x.db'", "INSTALL httpfs",
])
def test_hostile_subsets_are_refused(qdb, predicate):
    db, _ = qdb
    with pytest.raises((UnsafeQuery, InvalidInput)):
        db.reps().compare(subset=predicate)


def test_unknown_subset_column(qdb):
    db, _ = qdb
    with pytest.raises(InvalidInput, match="subset column 'colour' is unknown"):
        db.reps().compare(subset="colour = 'red'")


def test_different_tokenizers_need_alignment(qdb):
    db, values = qdb
    t = token_table()
    keep = t["position"] % 2 == 0  # another "tokenizer": every other token
    other = {k: v[keep] for k, v in t.items()}
    other["position"] = other["position"] // 2
    db.write_rep("other", "final", "d", "hidden.1", values[("final", 1)][keep] * 3, tokens=other,
                 tokenizer="tok2", dtype="float32")
    plan = db.reps(model="other").compare(db.reps(model="m", checkpoint="final", layer=1))
    with pytest.raises(InvalidInput, match=r"different token tables.*align='example:mean'"):
        plan.pair_list() and plan.compute()
    row = db.reps(model="other").compare(db.reps(model="m", checkpoint="final", layer=1),
                                         align="example:mean").compute().rows[0]
    full = values[("final", 1)].astype(np.float64)
    x = (values[("final", 1)][keep] * 3).astype(np.float64).reshape(N_EX, -1, full.shape[1]).mean(1)
    y = full.reshape(N_EX, TOK_PER_EX, -1).mean(1)
    assert row["n"] == N_EX
    assert row["value"] == pytest.approx(M.linear_cka(x, y), rel=1e-9)
    word = db.reps(model="other").compare(db.reps(model="m", checkpoint="final", layer=1), align="word").compute()
    assert 0 < word.rows[0]["value"] <= 1 and word.rows[0]["n"] > N_EX


def test_memory_budget_tiles_without_changing_values(qdb, reads):
    db, _ = qdb
    plan = db.reps().compare(measure="linear_cka")
    whole = plan.compute().values()
    reads.clear()
    tiled = plan.compute(recompute=True, memory_budget=30_000)
    assert tiled.values() == pytest.approx(whole, rel=1e-10)
    assert max(reads.values()) > 1  # tiled passes re-read reps: the price of the bound


def test_a_pass_frees_its_accumulators_before_the_next_pass(qdb, monkeypatch):
    """Peak memory is one pass's accumulators, not the sum over passes: nothing (no
    variable, no reference cycle) keeps a finished pass's Moments alive."""
    import weakref

    from actdb.query import executor

    db, _ = qdb
    alive: list[int] = []
    previous: list[weakref.ref] = []
    original = executor.moments_pass

    def watched(*args, **kwargs):
        alive.append(sum(ref() is not None for ref in previous))
        accs = original(*args, **kwargs)
        previous[:] = [weakref.ref(a) for a in accs]
        return accs

    monkeypatch.setattr(executor, "moments_pass", watched)
    db.reps().compare(measure="linear_cka").compute(recompute=True, memory_budget=30_000)
    assert len(alive) > 2 and alive == [0] * len(alive)


def test_sql_dissim_batches_into_one_plan(qdb, monkeypatch):
    db, _ = qdb
    from actdb.query import executor

    calls = []
    original = executor.run_plan
    monkeypatch.setattr(executor, "run_plan", lambda *a, **k: calls.append(len(a[1])) or original(*a, **k))
    q = ("SELECT a.step, a.layer, dissim('linear_cka', a.rep_id, b.rep_id) AS cka FROM reps a JOIN reps b "
         "ON a.layer = b.layer WHERE a.model = 'm' AND b.model = 'm' AND b.checkpoint = 'final' ORDER BY 1, 2")
    table = db.sql(q).to_pylist()
    assert calls == [12]
    assert len(table) == 12 and all(r["cka"] == pytest.approx(1.0) for r in table if r["step"] == 1000)
    direct = db.reps(model="m").compare(pairs="to_reference").compute().rows
    expect = {(r["step_a"], r["layer_a"]): r["value"] for r in direct}
    for r in table:
        if r["step"] != 1000:
            assert r["cka"] == pytest.approx(expect[(r["step"], r["layer"])], rel=1e-12)


def test_cross_store_equals_within_store(tmp_path, qdb):
    from query_data import fill

    import actdb

    db, _ = qdb
    fill(db, model="other", seed=5, dataset="d")  # same texts, second model, in the local store
    teamb = actdb.open(str(tmp_path / "teamb"))
    fill(teamb, model="other", seed=5, dataset="d-copy")  # same texts and labels, another store and name
    teamb.close()
    db.attach(str(tmp_path / "teamb"), name="teamb")
    local = db.reps(model="m", checkpoint="final").compare(db.reps(model="other", checkpoint="final")).compute()
    cross = db.reps(model="m", checkpoint="final").compare(
        db.reps(store="teamb", model="other", checkpoint="final")).compute()
    assert cross.values() == pytest.approx(local.values(), rel=1e-10)
    assert {r["store_b"] for r in cross.rows} == {"teamb"}
    # cross-store results are cached in the local store, and readable by SQL
    again = db.reps(model="m", checkpoint="final").compare(
        db.reps(store="teamb", model="other", checkpoint="final")).compute()
    assert all(r["cached"] for r in again.rows) and again.values() == cross.values()
    rows = db.sql("SELECT model_b, store_b, value FROM dissimilarities WHERE store_b <> 'local'").to_pylist()
    assert len(rows) == 16 and rows[0]["model_b"] == "other" and rows[0]["store_b"].endswith("teamb")
    other_texts = actdb.open(str(tmp_path / "teamc"))
    other_texts.add_dataset("d", ["different"] * N_EX)
    other_texts.write_rep("z", "final", "d", "hidden.1", np.ones((N_EX, 3)), pooling="mean")
    other_texts.close()
    db.attach(str(tmp_path / "teamc"), name="teamc")
    with pytest.raises(InvalidInput, match=r"different texts.*content hash"):
        db.reps(layer=1, checkpoint="final", model="m").compare(db.reps(store="teamc"),
                                                                align="example:mean").pair_list() and \
            db.reps(layer=1, checkpoint="final", model="m").compare(db.reps(store="teamc"),
                                                                    align="example:mean").compute()
