"""Checkpoints as pickles: a ``pytorch_model.bin`` whose pickle would run code is refused
(weights are unpickled only with ``weights_only=True``), the code never runs, and the
store is unchanged; a plain pickled state dict (weights_only-safe) still loads."""

from __future__ import annotations

import pytest
from security_kit import raises_actdb, tiny_bert

import actdb
from actdb.errors import InvalidInput

pytestmark = pytest.mark.slow


def test_a_pickle_that_runs_code_is_refused(hostile_store, unchanged, tmp_path):
    db, _ = hostile_store
    folder = tiny_bert(tmp_path / "evil", weights="evil")
    assert (folder / "pytorch_model.bin").is_file() and not (folder / "model.safetensors").exists()
    exc = raises_actdb(lambda: db.ingest(str(folder), "d", name="evil", sites=["hidden.*"], quiet=True),
                       InvalidInput, match="weights_only")
    assert "safetensors" in str(exc)
    assert not (folder / "PWNED").exists(), "the pickle ran code"
    assert "evil" not in {m.name for m in db.models()}


def test_a_weights_only_safe_pickle_loads(tmp_path):
    folder = tiny_bert(tmp_path / "plain", weights="bin")
    db = actdb.open(str(tmp_path / "s"))
    result = db.ingest(str(folder), "docs", texts=["a first text", "and a second one"], name="plain",
                       sites=["hidden.*"], quiet=True)
    assert result.n_rows > 0 and len(db.find_reps(model="plain")) == 3
    assert db.verify().clean
