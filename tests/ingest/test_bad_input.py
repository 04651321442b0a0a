"""Bad input: each fails with a clear error and leaves nothing (or nothing half-written) behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from actdb.errors import AlreadyExists, DtypeOverflow, InvalidInput, NotFound
from actdb.ingest import run
from actdb.store import runs

pytest.importorskip("torch", reason="torch is a hard dependency of ingest")


def assert_nothing_written(db: Any) -> None:
    assert db.datasets() == [] and db.models() == []
    assert db.find_reps(status="writing") == [] and db.find_reps() == []
    assert runs.ingest_runs(db) == []
    assert not list((db.path / "arrays").glob("reps/*/"))


@pytest.fixture
def ckpt(neox_sweep: Path) -> Path:
    return neox_sweep / "checkpoint-4"


def test_missing_model_folder(store: Any, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"model folder '.*no-model' does not exist"):
        run(store, tmp_path / "no-model", "d", texts=["a text"], quiet=True)
    assert_nothing_written(store)


def test_site_glob_matching_nothing(store: Any, ckpt: Path) -> None:
    with pytest.raises(NotFound) as err:
        run(store, ckpt, "d", texts=["a text"], sites=["hidden.*", "gpt_neox.layers.*.mlp.gelu"], quiet=True)
    assert "'gpt_neox.layers.*.mlp.gelu' matches no module of GPTNeoXForCausalLM" in str(err.value)
    assert "closest module paths: 'gpt_neox.layers.*.mlp" in str(err.value)  # one per block shape
    assert_nothing_written(store)


def test_empty_dataset(store: Any, ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="has no texts; give at least one"):
        run(store, ckpt, "d", texts=[], quiet=True)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InvalidInput, match=r"empty.txt has no texts"):
        run(store, ckpt, "d", texts=tmp_path / "empty.txt", quiet=True)
    assert_nothing_written(store)


def test_empty_strings_are_refused(store: Any, ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"has 2 empty text\(s\) \(example 1, 3\).*drop them"):
        run(store, ckpt, "d", texts=["one", "", "three", ""], quiet=True)
    (tmp_path / "gaps.txt").write_text("one\n\nthree\n")
    with pytest.raises(InvalidInput, match=r"gaps.txt has 1 empty text\(s\) \(example 1\)"):
        run(store, ckpt, "d", texts=tmp_path / "gaps.txt", quiet=True)
    assert_nothing_written(store)


def test_empty_strings_in_a_stored_dataset(store: Any, ckpt: Path) -> None:
    store.add_dataset("stored", ["fine", ""])
    with pytest.raises(InvalidInput, match=r"dataset 'stored' has 1 empty text\(s\) \(example 1\)"):
        run(store, ckpt, "stored", quiet=True)
    assert store.models() == [] and store.find_reps(status="writing") == []


def test_missing_text_column(store: Any, ckpt: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "t.jsonl").write_text(json.dumps({"sentence": "a b"}) + "\n")
    (tmp_path / "t.csv").write_text("sentence,label\na b,1\n")
    pq.write_table(pa.table({"sentence": ["a b"]}), tmp_path / "t.parquet")
    for name in ("t.jsonl", "t.csv", "t.parquet"):
        with pytest.raises(InvalidInput, match=r"no text column 'text'.*'sentence'.*text_column="):
            run(store, ckpt, "d", texts=tmp_path / name, quiet=True)
    with pytest.raises(InvalidInput, match="no label column 'gold'"):
        run(store, ckpt, "d", texts=tmp_path / "t.csv", text_column="sentence", label_column="gold", quiet=True)
    assert_nothing_written(store)


def test_non_utf8_file(store: Any, ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait\nsecond line\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match=r"latin1.txt is not UTF-8 text: byte 0xe9 at offset 3 \(line 1\)"):
        run(store, ckpt, "d", texts=tmp_path / "latin1.txt", quiet=True)
    assert_nothing_written(store)


def test_missing_text_file_and_unknown_suffix(store: Any, ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        run(store, ckpt, "d", texts=tmp_path / "nope.txt", quiet=True)
    (tmp_path / "t.xml").write_text("<a/>")
    with pytest.raises(InvalidInput, match=r"suffix '.xml' is not one of .txt, .jsonl, .csv, .parquet"):
        run(store, ckpt, "d", texts=tmp_path / "t.xml", quiet=True)
    assert_nothing_written(store)


def test_unknown_dataset_without_texts(store: Any, ckpt: Path) -> None:
    with pytest.raises(NotFound, match=r"no dataset named 'nope'.*pass texts="):
        run(store, ckpt, "nope", quiet=True)


def test_bad_arguments(store: Any, ckpt: Path) -> None:
    with pytest.raises(InvalidInput, match="pooling 'max' is not one of"):
        run(store, ckpt, "d", texts=["a"], pooling="token,max", quiet=True)
    with pytest.raises(InvalidInput, match="batch_size must be a positive integer"):
        run(store, ckpt, "d", texts=["a"], batch_size=0, quiet=True)
    with pytest.raises(InvalidInput, match="stored dtype 'int8' is not supported"):
        run(store, ckpt, "d", texts=["a"], dtype="int8", quiet=True)
    with pytest.raises(InvalidInput, match="max_length 100 exceeds the model's 64 positions"):
        run(store, ckpt, "d", texts=["a"], max_length=100, quiet=True)
    with pytest.raises(InvalidInput, match="must be NAME=PATH or NAME=REVISION"):
        run(store, "m", "d", texts=["a"], checkpoints=["just-a-name"], quiet=True)
    assert_nothing_written(store)


def test_changed_texts_under_the_same_name(store: Any, ckpt: Path) -> None:
    run(store, ckpt, "d", texts=["one text"], sites="hidden.1", quiet=True)
    with pytest.raises(AlreadyExists, match="dataset 'd' is already stored with other contents"):
        run(store, ckpt, "d", texts=["another text"], sites="hidden.1", quiet=True)


@pytest.fixture(scope="module")
def hot_model(neox_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """checkpoint-4 with its embeddings scaled so hidden.0 exceeds the float16 range."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()
    src = neox_sweep / "checkpoint-4"
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        model.gpt_neox.embed_in.weight.mul_(1e6)
    out = tmp_path_factory.mktemp("hot") / "model"
    model.save_pretrained(out)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, out)
    return out


def test_float16_overflow_names_the_site_and_keeps_nothing_half_written(store: Any, hot_model: Path,
                                                                        corpus: list[str]) -> None:
    with pytest.raises(DtypeOverflow) as err:
        run(store, hot_model, "d", texts=corpus[:40], sites=["hidden.*"], pooling="token,mean", batch_size=8,
            quiet=True)
    msg = str(err.value)
    assert "activations at site 'hidden.0' reach" in msg and "dtype='float32'" in msg
    assert "checkpoint 'final'" in msg
    assert store.find_reps(status="writing") == [] and store.find_reps() == []
    assert not list((store.path / "arrays").glob("reps/*/"))
    assert store.verify().clean
    assert [r["status"] for r in runs.ingest_runs(store)] == ["failed"]
    # the fix the message suggests works
    ok = run(store, hot_model, "d", texts=corpus[:40], sites=["hidden.*"], pooling="token,mean", batch_size=8,
             dtype="float32", quiet=True)
    assert len(ok.rep_ids) == 6 and store.verify().clean
