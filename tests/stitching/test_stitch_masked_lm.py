"""Stitching into a masked LM, end to end: tiny BERT masked-LM checkpoints ingested into a store,
compared through a plan (held-out split, masking, A re-run on the masked inputs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from stitch_models import save_bert, texts

import actdb
from actdb.errors import InvalidInput


@pytest.fixture(scope="module")
def bert_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny BERT masked LM untrained (checkpoint-0) and trained 600 steps (checkpoint-600)."""
    root: Path = tmp_path_factory.mktemp("mlm")
    for step in (0, 600):
        save_bert(root / "runs" / f"checkpoint-{step}", seed=10, steps=step)
    db = actdb.open(str(root / "store"))
    db.ingest(str(root / "runs"), "docs", texts=texts(80), name="bert", sites=["hidden.1", "hidden.2"],
              pooling="token", dtype="float32", max_length=24, quiet=True)
    yield db
    db.close()


def _row(db: Any, a: dict[str, Any], b: dict[str, Any], **params: Any) -> dict[str, Any]:
    return db.reps(**a).compare(db.reps(**b), measure="stitching", pairs="zip", **params).compute().rows[0]


def test_masked_lm_self_stitch_costs_nothing_and_reports_the_objective(bert_store: Any) -> None:
    db = bert_store
    same = {"checkpoint": "checkpoint-600", "site": "hidden.1"}
    row = _row(db, same, same)
    params = json.loads(row["params"])
    assert params["objective"] == "masked_lm" and params["mask_rate"] == 0.15 and "lr" not in params
    assert abs(row["value"]) < 1e-3 and row["n"] > 0  # n: the masked held-out tokens scored
    extra = json.loads(db.sql("SELECT extra FROM dissimilarities WHERE measure = 'stitching'").to_pylist()[0]["extra"])
    assert extra["objective"] == "masked_lm" and "masked-LM" in extra["objective_text"]
    assert extra["own_loss"] > 1.0 and "mean_cosine" not in extra
    assert extra["n_eval_examples"] == 20 and extra["eval_split"] == "every 4th example"


def test_masked_lm_penalty_from_another_model_and_other_masks(bert_store: Any) -> None:
    db = bert_store
    b = {"checkpoint": "checkpoint-600", "site": "hidden.1"}
    own = _row(db, b, b)["value"]
    other = _row(db, {"checkpoint": "checkpoint-0", "site": "hidden.1"}, b)
    # the untrained model's residual stream, mapped, costs B: 0.10 in a fresh process, 0.029 after the
    # whole suite (docstring_texts depends on which stdlib submodules are imported); self-stitch ~2e-6
    assert other["value"] > own + 0.01, other
    reseeded = _row(db, b, b, seed=3, mask_rate=0.4)
    assert reseeded["n"] > _row(db, b, b)["n"]  # a higher mask rate scores more tokens


def test_masked_lm_refinement_runs_and_is_reported(bert_store: Any) -> None:
    db = bert_store
    a, b = {"checkpoint": "checkpoint-0", "site": "hidden.1"}, {"checkpoint": "checkpoint-600", "site": "hidden.1"}
    refined = _row(db, a, b, train_steps=5, lr=1e-2)
    assert json.loads(refined["params"])["train_steps"] == 5
    assert refined["value"] != _row(db, a, b)["value"]


def test_masked_lm_refuses_the_next_token_objective(bert_store: Any) -> None:
    db = bert_store
    same = {"checkpoint": "checkpoint-600", "site": "hidden.1"}
    with pytest.raises(InvalidInput, match=r"needs bert/checkpoint-600/hidden\.1 loaded with a causal head"):
        _row(db, same, same, objective="next_token")
