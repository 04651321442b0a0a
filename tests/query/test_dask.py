"""The Dask executor on a real LocalCluster with 2 worker processes."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_dask_equals_local(qdb):
    db, _ = qdb
    plan = db.reps(layer=[0, 3]).compare(measure=["linear_cka", "procrustes", "svcca"])
    local = plan.compute()
    distributed = plan.compute(executor="dask", recompute=True)
    assert len(distributed) == len(local) == 108
    for a, b in zip(local.rows, distributed.rows):
        assert (a["rep_id_a"], a["rep_id_b"], a["measure"]) == (b["rep_id_a"], b["rep_id_b"], b["measure"])
        assert b["value"] == pytest.approx(a["value"], rel=1e-10, abs=1e-10)


@pytest.mark.slow
def test_dask_with_subset(qdb):
    db, _ = qdb
    plan = db.reps(checkpoint="final").compare(measure="linear_cka", subset="position % 2 = 0")
    local = plan.compute().values()
    assert plan.compute(executor="dask", recompute=True).values() == pytest.approx(local, rel=1e-10)


@pytest.mark.slow
def test_dask_stderr_and_cached_reps_equal_local(qdb):
    db, _ = qdb
    sel = db.reps(checkpoint="final", layer=[1, 2])
    local = sel.compare(measure=["linear_cka", "procrustes"], stderr=True).compute()
    distributed = sel.compare(measure=["linear_cka", "procrustes"], stderr=True).compute(executor="dask",
                                                                                         recompute=True)
    assert distributed.values() == pytest.approx(local.values(), rel=1e-10)
    assert [r["stderr"] for r in distributed.rows] == pytest.approx([r["stderr"] for r in local.rows], rel=1e-10)
    # every rep's own moments are cached now: the dask pass accumulates cross blocks only
    cross = db.reps(checkpoint="final", layer=1).compare(db.reps(checkpoint="final", layer=2), measure="svcca")
    on_dask = cross.compute(executor="dask").values()
    assert on_dask == pytest.approx(cross.compute(recompute=True).values(), rel=1e-10)
