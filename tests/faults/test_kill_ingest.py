"""kill -9 at random points of an ingest sweep (three checkpoints of a tiny BERT, token
and mean pooling, many shards a rep): mid-batch (the model running), mid-chunk (a shard
file being written by the background writer), mid-commit (a catalog transaction whose
statements ran but which has not committed) and at random times. The re-run resumes and
the stored arrays are byte-identical to an uninterrupted ingest."""

from __future__ import annotations

import pytest
from fault_harness import crash_trials
from reliability_kit import by_identity, tiny_bert

import actdb
from actdb.ingest import docstring_texts

pytestmark = pytest.mark.slow


def test_kill_during_ingest(zygote, tmp_path):
    sweep = {f"step{i}": str(tiny_bert(tmp_path / "sweep" / f"checkpoint-{i}", seed=i)) for i in range(3)}
    common = {"model": sweep["step0"], "texts": docstring_texts(64, seed=5), "sites": ["hidden.*"],
              "pooling": "token,mean", "batch_size": 8, "max_length": 24, "chunk_bytes": 512}
    base = tmp_path / "base"
    zygote.ok("ingest", base, {**common, "checkpoints": {"step0": sweep["step0"]}})  # complete before the crash
    with actdb.open(str(base)) as db:
        assert len(db.find_reps()) == 6  # 3 sites x 2 poolings

    def outcome(store):  # type: ignore[no-untyped-def]
        with actdb.open(str(store)) as db:
            return by_identity(db)

    figures = crash_trials(zygote, tmp_path, base, suite="ingest", command="ingest",
                           args={**common, "checkpoints": sweep},
                           kinds=["batch", "chunk", "commit", "flush", "timer"], outcome=outcome)
    assert figures.trials >= 1
    with actdb.open(str(tmp_path / "clean")) as db:
        assert len(db.find_reps()) == 18
