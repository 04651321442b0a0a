"""The same query gives bitwise the same values whatever the caches hold (issue 15.9).

A plan computed on a fresh store; the same plan after the ``result`` table is cleared but
the per-rep moments (``rep_moments``) are kept, so every rep's own statistics come from the
cache; and the plan on a third store with nothing cached: every value must be equal with
``==``, not approximately. Before the fix, a cached rep's diagonal block was moved to the
pass's shift and back before settling, and ``mean_cca`` moved by ~1e-12.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import actdb
from actdb.store import schema as S

MEASURES = ["mean_cca", "linear_cka", "procrustes", "svcca", "linear_regression"]


N, DIM, REPS = 3000, 16, 4


def fill(db: actdb.Database) -> None:
    """Activation-like reps whose shift (the first rows' mean) is far from their mean: large
    outlier means and a drift along the rows, where moving statistics between centres rounds."""
    rng = np.random.default_rng(7)
    db.add_dataset("d", [f"text {i}" for i in range(N)])
    drift = np.linspace(0, 30, N)[:, None]
    base = rng.standard_normal((N, DIM))
    for k in range(REPS):
        mix = np.eye(DIM) + 0.5 * rng.standard_normal((DIM, DIM))
        x = np.tanh(base @ mix) + 0.3 * rng.standard_normal((N, DIM))
        x[:, :3] = x[:, :3] * 40 + 250 + drift * (k + 1)  # outlier dimensions with a trend
        db.write_rep("m", "final", "d", f"hidden.{k}", x.astype(np.float32), pooling="mean", dtype="float32")


def _values(db: actdb.Database, **kw: Any) -> dict[tuple[Any, ...], float]:
    rows = db.reps(model="m").compare(measure=MEASURES).compute(**kw).rows
    return {(r["measure"], r["rep_id_a"], r["rep_id_b"]): r["value"] for r in rows}


def _count(db: actdb.Database, table: sa.Table) -> int:
    with db.catalog.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


@pytest.mark.parametrize("memory_budget", [None, 12_000])  # one pass; several tiled passes
def test_values_do_not_depend_on_what_was_cached(tmp_path: Path, memory_budget: int | None) -> None:
    first = actdb.open(str(tmp_path / "a"))
    fill(first)
    fresh = _values(first, memory_budget=memory_budget)
    assert _count(first, S.rep_moments) == REPS  # every rep's own moments are cached now
    with first.catalog.connect(write=True) as conn:
        conn.execute(S.result.delete())
    from_moments = _values(first, memory_budget=memory_budget)  # every rep's diagonal from the cache
    assert _count(first, S.result) > 0  # computed again (symmetric pairs stored once)
    third = actdb.open(str(tmp_path / "c"))
    fill(third)
    nothing_cached = _values(third, memory_budget=memory_budget)
    assert len(fresh) == len(MEASURES) * REPS * REPS
    differ = [(k, fresh[k], from_moments[k]) for k in fresh if fresh[k] != from_moments[k]]
    assert not differ, f"{len(differ)} of {len(fresh)} values changed with cached moments: {differ[:3]}"
    assert nothing_cached == fresh
    first.close()
    third.close()


def test_adding_reps_to_a_cached_plan_keeps_old_values(tmp_path: Path) -> None:
    """A pair first computed with both reps' moments fresh, then in a bigger plan where they
    come from the cache and other reps are new: the same value, bitwise."""
    db = actdb.open(str(tmp_path / "a"))
    fill(db)
    small = {k: v for k, v in _values(db).items()}
    with db.catalog.connect(write=True) as conn:
        conn.execute(S.result.delete())
        conn.execute(S.rep_moments.delete().where(S.rep_moments.c.rep_id > 2))
    again = _values(db)
    assert {k: again[k] for k in small} == small
    db.close()
