"""kill -9 at random points of ``write_rep``: before/inside catalog transactions, between
shard files, while metadata is written, at random times."""

from __future__ import annotations

import numpy as np
import pytest
from fault_harness import crash_trials
from reliability_kit import by_identity

import actdb
from actdb.store import arrays

pytestmark = pytest.mark.slow
ROWS, DIM, CHUNK_BYTES = 20_000, 16, 4096  # float16: 128-row chunks, 4096-row shards: 5 shard files


def test_kill_during_write_rep(zygote, tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK_BYTES", CHUNK_BYTES)
    base = tmp_path / "base"
    with actdb.open(str(base)) as db:
        db.add_dataset("d", [f"t{i}" for i in range(ROWS)])
        for i in range(2):  # complete before the crash: must survive byte for byte
            x = np.random.default_rng(100 + i).standard_normal((ROWS, DIM)).astype("float32")
            db.write_rep("m", "c", "d", f"hidden.{i}", x, pooling="mean")
    args = {"seed": 7, "rows": ROWS, "dim": DIM, "site": "hidden.9", "chunk_bytes": CHUNK_BYTES}

    def outcome(store):  # type: ignore[no-untyped-def]
        with actdb.open(str(store)) as db:
            return by_identity(db)

    figures = crash_trials(zygote, tmp_path, base, suite="write_rep", command="write_rep", args=args,
                           kinds=["chunk", "commit", "sql", "flush", "meta", "timer"], outcome=outcome)
    assert figures.trials >= 1 and sum(figures.killed.values()) >= 1
