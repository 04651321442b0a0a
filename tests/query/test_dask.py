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
