"""kill -9 while a comparison computes and caches its results: the results cache is
written in one transaction, so it holds all of a plan's values or none, and a re-run
yields exactly the values of a clean run."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fault_harness import crash_trials, fill

import actdb
from actdb.store import arrays

pytestmark = pytest.mark.slow


def cached_results(store) -> list[tuple]:  # type: ignore[no-untyped-def]
    with actdb.open(str(store)) as db, db.catalog.connect() as conn:
        rows = conn.execute(sa.text("SELECT measure, params_hash, rep_a, rep_b, subset_hash, value, n FROM result "
                                    "ORDER BY measure, rep_a, rep_b")).all()
    return [tuple(r) for r in rows]


def test_kill_during_compute_and_caching(zygote, tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 4096)
    base = tmp_path / "base"
    with actdb.open(str(base)) as db:
        fill(db)
    args = {"measures": ["linear_cka", "procrustes"], "chunk_bytes": 4096}
    figures = crash_trials(zygote, tmp_path, base, suite="compute", command="compute", args=args,
                           kinds=["commit", "sql", "timer"], outcome=cached_results)
    assert figures.trials >= 1
    # a clean run cached every pair once: 9 reps, all pairs, two measures
    assert len(cached_results(tmp_path / "clean")) >= 2 * 9 * 8 // 2
