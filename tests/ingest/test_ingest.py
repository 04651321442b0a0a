"""Ingest end to end: the real MiniLM, tiny GPT-NeoX / GPT-2 checkpoint sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actdb
from actdb.ingest import run
from actdb.store import runs

torch = pytest.importorskip("torch", reason="torch is a hard dependency of ingest")

POOLINGS = ("token", "mean", "first", "last")


@pytest.fixture(scope="module")
def minilm_store(tmp_path_factory: pytest.TempPathFactory, minilm: Path, corpus: list[str]) -> Any:
    db = actdb.open(str(tmp_path_factory.mktemp("minilm") / "store"))
    texts = [*corpus[:40], "naïve café — déjà vu", "x " * 300]  # accents; one text longer than max_length
    result = db.ingest(minilm, "docs", texts=texts, name="minilm", pooling=",".join(POOLINGS), batch_size=16,
                       max_length=128, quiet=True)
    yield db, result, texts
    db.close()


def test_minilm_reps(minilm_store: Any) -> None:
    db, result, texts = minilm_store
    assert result.sites == tuple(f"hidden.{i}" for i in range(7))
    assert result.checkpoints[0].status == "ingested" and result.checkpoints[0].checkpoint == "final"
    reps = db.find_reps(model="minilm", dataset="docs")
    assert sorted({(r.site, r.pooling) for r in reps}) == sorted((f"hidden.{i}", p) for i in range(7) for p in POOLINGS)
    assert len(reps) == 28 and {r.dim for r in reps} == {384} and {r.dtype for r in reps} == {"float16"}
    assert {r.n_rows for r in reps if r.pooling != "token"} == {len(texts)}
    assert {r.n_rows for r in reps if r.pooling == "token"} == {result.n_rows}
    model = db.model("minilm")
    assert (model.family, model.architecture, model.width, model.depth) == ("bert", "BertModel", 384, 6)
    assert db.verify().clean


def test_minilm_token_table_matches_tokenizer(minilm_store: Any, minilm: Path) -> None:
    from transformers import AutoTokenizer

    db, result, texts = minilm_store
    tok = AutoTokenizer.from_pretrained(minilm)
    info = db.tokenization("docs", result.tokenizer, 128)
    too_long = sum(len(ids) > 128 for ids in tok(texts)["input_ids"])  # counted by the tokenizer itself
    assert too_long >= 1 and info.n_truncated == too_long == result.n_truncated and info.max_length == 128
    table = db.token_table(info.id).to_pydict()
    enc = tok(texts, truncation=True, max_length=128, return_offsets_mapping=True, return_special_tokens_mask=True)
    want_ids = [i for ids in enc["input_ids"] for i in ids]
    assert table["token_id"] == want_ids
    assert table["example"] == [e for e, ids in enumerate(enc["input_ids"]) for _ in ids]
    assert table["position"] == [p for ids in enc["input_ids"] for p in range(len(ids))]
    assert table["token"] == tok.convert_ids_to_tokens(want_ids)
    special = [bool(s) for m in enc["special_tokens_mask"] for s in m]
    assert table["special"] == special
    assert table["row"] == list(range(len(want_ids)))
    offsets = [o for offs in enc["offset_mapping"] for o in offs]
    for i in range(len(want_ids)):
        if special[i]:
            assert table["char_start"][i] is None and table["char_end"][i] is None
        else:
            assert (table["char_start"][i], table["char_end"][i]) == tuple(offsets[i])
    # spans point into the text: "café" in example 40
    rows = [i for i in range(len(want_ids)) if table["example"][i] == 40 and not special[i]]
    spans = [texts[40][table["char_start"][i]: table["char_end"][i]] for i in rows]
    assert spans[0] == "naïve" and "café" in spans  # offsets index the original (accented) text
    assert max(table["position"]) == 127  # truncated to max_length, [SEP] kept
    assert len(enc["input_ids"][41]) == 128 and enc["input_ids"][41][-1] == tok.sep_token_id


def test_minilm_values_match_the_model(minilm_store: Any, minilm: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    db, result, texts = minilm_store
    tok = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm).eval()
    some = [0, 7, 40]
    enc = tok([texts[i] for i in some], truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hs = model(**enc, output_hidden_states=True).hidden_states
    reps = {(r.site, r.pooling): r for r in db.find_reps(model="minilm", dataset="docs")}
    info = db.tokenization("docs", result.tokenizer, 128)
    starts = np.searchsorted(np.asarray(db.token_table(info.id).column("example")), np.arange(len(texts) + 1))
    for layer in (0, 3, 6):
        tokens = db.read_rep(reps[(f"hidden.{layer}", "token")])
        mean = db.read_rep(reps[(f"hidden.{layer}", "mean")])
        first = db.read_rep(reps[(f"hidden.{layer}", "first")])
        last = db.read_rep(reps[(f"hidden.{layer}", "last")])
        for b, ex in enumerate(some):
            n = int(enc["attention_mask"][b].sum())
            ref = hs[layer][b, :n].numpy()
            rows = tokens[int(starts[ex]): int(starts[ex + 1])].astype(np.float32)
            assert rows.shape == ref.shape
            np.testing.assert_allclose(rows, ref, rtol=2e-3, atol=2e-3)
            np.testing.assert_allclose(mean[ex].astype(np.float32), ref.mean(0), rtol=2e-3, atol=2e-3)
            np.testing.assert_allclose(first[ex].astype(np.float32), ref[0], rtol=2e-3, atol=2e-3)
            np.testing.assert_allclose(last[ex].astype(np.float32), ref[n - 1], rtol=2e-3, atol=2e-3)


def test_rerun_is_a_noop(minilm_store: Any, minilm: Path) -> None:
    db, result, texts = minilm_store
    before = len(runs.ingest_runs(db))
    again = db.ingest(minilm, "docs", texts=texts, name="minilm", pooling=list(POOLINGS), batch_size=16,
                      max_length=128, quiet=True)
    assert again.up_to_date and again.run_id is None and again.n_tokens == 0
    assert again.summary().startswith("nothing to do: minilm x docs")
    assert len(runs.ingest_runs(db)) == before
    assert set(again.rep_ids) == set(result.rep_ids)


def test_ingest_run_record(minilm_store: Any) -> None:
    db, result, _ = minilm_store
    record = runs.ingest_run(db, result.run_id)
    assert record["status"] == "complete" and record["device"] == "cpu"
    assert record["n_tokens"] == result.n_rows and record["tokens_per_s"] > 0 and record["seconds"] > 0
    assert record["args"]["max_length"] == 128 and record["args"]["pooling"] == list(POOLINGS)
    assert {"torch", "transformers", "actdb", "python"} <= set(record["versions"])
    with db.session():
        linked = db.rep_meta(result.rep_ids[0])["ingest_run_id"]
    assert linked == result.run_id


def test_module_sites(store: Any, minilm: Path, corpus: list[str]) -> None:
    result = run(store, minilm, "few", texts=corpus[:5], name="minilm", quiet=True,
                 sites=["encoder.layer.*.attention.output", "hidden.-1"], pooling="mean")
    assert result.sites == (*(f"encoder.layer.{i}.attention.output" for i in range(6)), "hidden.6")
    reps = store.find_reps(model="minilm")
    assert {r.layer for r in reps} == {1, 2, 3, 4, 5, 6}
    assert len(reps) == 7 and all(r.n_rows == 5 for r in reps)


def test_neox_checkpoint_folder_sweep(store: Any, neox_sweep: Path, corpus: list[str]) -> None:
    result = run(store, neox_sweep, "docs", texts=corpus[:50], name="pythia-tiny", sites=["hidden.*", "**.mlp.act"],
                 pooling=("token", "last"), batch_size=8, quiet=True)
    assert [c.checkpoint for c in result.checkpoints] == ["checkpoint-0", "checkpoint-4", "checkpoint-8"]
    assert [c.step for c in store.checkpoints("pythia-tiny")] == [0, 4, 8]
    assert len({c.weights_hash for c in result.checkpoints}) == 3 and not result.duplicates
    assert result.sites == ("hidden.0", "hidden.1", "hidden.2", "gpt_neox.layers.0.mlp.act",
                            "gpt_neox.layers.1.mlp.act")
    reps = store.find_reps(model="pythia-tiny")
    assert len(reps) == 3 * 5 * 2
    mlp = [r for r in reps if r.site.endswith("mlp.act")]
    assert {r.dim for r in mlp} == {64} and {r.dim for r in reps if r.site.startswith("hidden")} == {32}
    # one token table shared by every checkpoint
    assert {r.tokenization_id for r in reps} == {store.tokenization("docs", "pythia-tiny").id}
    # training changed the activations between checkpoints
    a, b = (store.read_rep(store.find_reps(model="pythia-tiny", checkpoint=c, site="hidden.2", pooling="token")[0])
            for c in ("checkpoint-0", "checkpoint-8"))
    assert not np.array_equal(a.to_numpy(), b.to_numpy())
    assert store.verify().clean


def test_gpt2_sweep_detects_identical_checkpoints(store: Any, gpt2_sweep: Path, corpus: list[str]) -> None:
    specs = [f"step{s}={gpt2_sweep / f'checkpoint-{s}'}" for s in (0, 4, 6)]
    result = run(store, "gpt2-tiny", "docs", texts=corpus[:30], checkpoints=specs, sites="hidden.-1",
                 quiet=True)
    assert [c.step for c in result.checkpoints] == [0, 4, 6]
    assert result.duplicates == [("step6", "step4")]
    assert "note: checkpoint step6 has the same weights as step4" in result.summary()
    assert [(c.name, c.duplicate_of) for c in store.duplicate_checkpoints()] == [("step6", "step4")]
    same = [store.read_rep(store.find_reps(model="gpt2-tiny", checkpoint=c)[0]).to_numpy() for c in ("step4", "step6")]
    np.testing.assert_array_equal(*same)
    assert store.find_reps(model="gpt2-tiny")[0].site == "hidden.2"


def test_two_models_share_a_dataset(store: Any, neox_sweep: Path, minilm: Path, corpus: list[str]) -> None:
    run(store, neox_sweep / "checkpoint-4", "docs", texts=corpus[:10], name="neox", quiet=True, sites="hidden.1")
    run(store, minilm, "docs", name="minilm", quiet=True, sites="hidden.1")  # dataset by name only
    assert [d.name for d in store.datasets()] == ["docs"]
    reps = store.find_reps(dataset="docs")
    assert {r.model for r in reps} == {"neox", "minilm"} and len({r.tokenization_id for r in reps}) == 2
