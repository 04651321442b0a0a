"""Selection.dataloader: chunk-shuffled row batches for probes and SAEs (actdb.query.loader)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from query_data import DIM, LABELS, N_EX, TOK_PER_EX, token_table

from actdb.errors import InvalidInput
from actdb.query.loader import RowStream

N = N_EX * TOK_PER_EX  # 540 rows, 64-row chunks (the qdb fixture): 9 chunks


def rows_of(loader, key="hidden.1"):
    """(row index of every yielded row, values) over one epoch; needs columns=("row",)."""
    batches = list(loader)
    return (np.concatenate([b["row"].numpy() for b in batches]),
            np.concatenate([b[key].numpy() for b in batches]), batches)


def test_shuffled_epoch_is_a_permutation_with_the_stored_values(qdb):
    db, values = qdb
    loader = db.reps(checkpoint="final", site="hidden.1").dataloader(50, columns=("row",), buffer_rows=128)
    assert isinstance(loader, torch.utils.data.DataLoader)
    rows, x, batches = rows_of(loader)
    assert sorted(rows.tolist()) == list(range(N))  # every row once
    assert rows.tolist() != list(range(N))  # shuffled
    np.testing.assert_array_equal(x, values[("final", 1)][rows])
    assert x.dtype == np.float32 and batches[0]["hidden.1"].shape == (50, DIM)
    assert [len(b["row"]) for b in batches] == [50] * 10 + [40]
    assert len(loader) == len(batches) == 11


def test_shuffle_is_chunk_wise_and_bounded_by_the_buffer(qdb):
    db, _ = qdb
    # buffer of 128 rows = 2 chunks of 64: each run of 128 yielded rows comes from 2 chunks only
    loader = db.reps(checkpoint="final", site="hidden.0").dataloader(64, columns=("row",), buffer_rows=128)
    rows, _, _ = rows_of(loader, "hidden.0")
    chunks = rows // 64
    for s in range(0, 512, 128):
        if 8 in chunks[s: s + 128]:  # the short last chunk (28 rows): its group's rows carry over
            break
        assert len(np.unique(chunks[s: s + 128])) == 2
    assert s > 0 or 8 in chunks[:128]
    assert len(np.unique(chunks[:64])) == 2  # rows shuffled across the two chunks of a group
    assert chunks[::128].tolist() != sorted(chunks[::128].tolist())  # chunk order shuffled (seed 0)


def test_order_depends_on_seed_and_epoch_only(qdb):
    db, _ = qdb
    sel = db.reps(checkpoint="final", site="hidden.2")

    def order(seed, epoch=0):
        loader = sel.dataloader(32, seed=seed, columns="row", buffer_rows=128)
        loader.dataset.set_epoch(epoch)
        return rows_of(loader, "hidden.2")[0].tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(0, epoch=1) != order(0, epoch=0)
    assert order(0, epoch=1) == order(0, epoch=1)
    with pytest.raises(InvalidInput, match="epoch must be a non-negative integer, not -1"):
        sel.dataloader(32).dataset.set_epoch(-1)


def test_sequential_is_store_order(qdb):
    db, values = qdb
    loader = db.reps(checkpoint="step10", site="hidden.3").dataloader(100, shuffle=False, columns=["row"])
    rows, x, batches = rows_of(loader, "hidden.3")
    assert rows.tolist() == list(range(N))
    np.testing.assert_array_equal(x, values[("step10", 3)])
    assert len(batches) == 6 and len(batches[-1]["row"]) == 40


def test_drop_last_and_dtype(qdb):
    db, values = qdb
    loader = db.reps(checkpoint="final", site="hidden.0").dataloader(100, shuffle=False, drop_last=True,
                                                                      dtype=torch.float16)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    assert batches[0]["hidden.0"].dtype == torch.float16
    np.testing.assert_array_equal(batches[0]["hidden.0"].numpy(), values[("final", 0)][:100].astype(np.float16))
    assert next(iter(db.reps(checkpoint="final", site="hidden.0").dataloader(
        540, shuffle=False, dtype="float64")))["hidden.0"].dtype == torch.float64


def test_batches_larger_than_the_buffer_span_groups(qdb):
    db, values = qdb
    loader = db.reps(checkpoint="final", site="hidden.1").dataloader(150, columns=("row",), buffer_rows=64,
                                                                      dtype="bfloat16")
    batches = list(loader)
    rows = np.concatenate([b["row"].numpy() for b in batches])
    assert sorted(rows.tolist()) == list(range(N))
    assert [len(b["row"]) for b in batches] == [150, 150, 150, 90] == [len(b["hidden.1"]) for b in batches]
    got = torch.cat([b["hidden.1"] for b in batches])
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, torch.from_numpy(values[("final", 1)][rows]).to(torch.bfloat16))


def test_several_sites_side_by_side_for_the_same_rows(qdb):
    db, values = qdb
    loader = db.reps(checkpoint="step100").dataloader(77, columns=("row", "example", "position"), seed=3)
    batches = list(loader)
    assert set(batches[0]) == {"hidden.0", "hidden.1", "hidden.2", "hidden.3", "row", "example", "position"}
    rows = np.concatenate([b["row"].numpy() for b in batches])
    assert sorted(rows.tolist()) == list(range(N))
    tokens = token_table()
    for layer in range(4):
        got = np.concatenate([b[f"hidden.{layer}"].numpy() for b in batches])
        np.testing.assert_array_equal(got, values[("step100", layer)][rows])
    np.testing.assert_array_equal(np.concatenate([b["example"].numpy() for b in batches]), tokens["example"][rows])
    np.testing.assert_array_equal(np.concatenate([b["position"].numpy() for b in batches]), tokens["position"][rows])


def test_keys_fall_back_to_labels_when_sites_repeat(qdb):
    db, _ = qdb
    batch = next(iter(db.reps(site="hidden.1").dataloader(8)))
    assert set(batch) == {"m/step10/hidden.1", "m/step100/hidden.1", "m/final/hidden.1"}


def test_labels_per_token_through_the_token_table(qdb):
    db, _ = qdb
    loader = db.reps(checkpoint="final", site="hidden.1").dataloader(64, label="label", columns=("row",))
    assert loader.dataset.classes == ("neg", "pos")
    batches = list(loader)
    rows = np.concatenate([b["row"].numpy() for b in batches])
    y = np.concatenate([b["label"].numpy() for b in batches])
    assert batches[0]["label"].dtype == torch.int64
    expected = np.array([loader.dataset.classes.index(LABELS[e]) for e in token_table()["example"]])
    np.testing.assert_array_equal(y, expected[rows])
    assert set(y.tolist()) == {0, 1}


def test_labels_of_example_level_reps(tmp_path):
    import actdb

    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", [f"text {i}" for i in range(30)], labels=["a", "b", "c"] * 10)
    x = np.arange(30 * 4, dtype=np.float32).reshape(30, 4)
    db.write_rep("m", "c", "d", "hidden.0", x, pooling="mean", dtype="float32")
    db.write_rep("m", "c", "d", "hidden.1", -x, pooling="last", dtype="float32")
    loader = db.reps().dataloader(7, label="label", columns=("example",))
    batches = list(loader)
    ex = np.concatenate([b["example"].numpy() for b in batches])
    assert sorted(ex.tolist()) == list(range(30))
    np.testing.assert_array_equal(np.concatenate([b["label"].numpy() for b in batches]), ex % 3)
    np.testing.assert_array_equal(np.concatenate([b["hidden.1"].numpy() for b in batches]), -x[ex])
    with pytest.raises(InvalidInput, match=r"columns \['position'\] cannot be streamed beside 'mean' rows"):
        db.reps(site="hidden.0").dataloader(7, columns=("position",))
    db.close()


def test_two_workers_yield_every_row_exactly_once(qdb):
    db, values = qdb
    for shuffle in (True, False):
        loader = db.reps(checkpoint="final", site=["hidden.0", "hidden.3"]).dataloader(
            40, shuffle=shuffle, num_workers=2, columns=("row",), label="label", buffer_rows=128)
        batches = list(loader)
        rows = np.concatenate([b["row"].numpy() for b in batches])
        assert sorted(rows.tolist()) == list(range(N)), f"shuffle={shuffle}"
        np.testing.assert_array_equal(np.concatenate([b["hidden.3"].numpy() for b in batches]),
                                      values[("final", 3)][rows])
        assert len(batches) == len(loader)
        assert sum(len(b["row"]) < 40 for b in batches) <= 2  # at most one short batch per worker


def test_each_chunk_is_read_once_per_epoch(qdb, reads):
    db, _ = qdb
    loader = db.reps(checkpoint="final", site="hidden.2").dataloader(16, buffer_rows=192)
    assert sum(len(b["hidden.2"]) for b in loader) == N
    assert sorted(c for _, c in reads) == list(range(9))
    assert set(reads.values()) == {1}


def test_memory_is_bounded_by_the_buffer(qdb):
    db, _ = qdb
    stream = db.reps(checkpoint="final", site="hidden.2").dataloader(16, buffer_rows=100).dataset
    assert isinstance(stream, RowStream)
    assert stream.block_rows == 64 and stream.blocks_per_group == 1
    seen = []
    original = stream._groups

    def spy(blocks, rng):
        for group in original(blocks, rng):
            seen.append(sum(r.nbytes for r in group.rows))
            yield group

    stream._groups = spy
    assert sum(len(b["hidden.2"]) for b in stream) == N
    assert max(seen) <= 64 * DIM * 4  # one 64-row chunk of float32 at a time (plus the one read ahead)


def test_bad_input_is_a_typed_error_naming_the_fix(qdb, tmp_path):
    db, _ = qdb
    sel = db.reps(checkpoint="final", site="hidden.0")
    with pytest.raises(InvalidInput, match=r"batch_size must be a positive integer, not 0; e.g. batch_size=256"):
        sel.dataloader(0)
    with pytest.raises(InvalidInput, match=r"batch_size must be a positive integer, not 2.5"):
        sel.dataloader(2.5)
    with pytest.raises(InvalidInput, match=r"matches no complete rep: nothing to load"):
        db.reps(model="nope").dataloader(8)
    with pytest.raises(InvalidInput, match=r"label 'topic' is not a column of the examples of dataset 'd'; "
                                           r"label columns: label, split"):
        sel.dataloader(8, label="topic")
    with pytest.raises(InvalidInput, match=r"label 'split': 60 of the 60 examples .* have none"):
        sel.dataloader(8, label="split")
    db.annotate("d", splits=["train"] * N_EX)
    with pytest.raises(InvalidInput, match=r"label 'split' of dataset 'd' has one class \('train'\)"):
        sel.dataloader(8, label="split")
    with pytest.raises(InvalidInput, match=r"dtype 'int8' is not a floating type"):
        sel.dataloader(8, dtype="int8")
    with pytest.raises(InvalidInput, match=r"columns \['text'\] cannot be streamed"):
        sel.dataloader(8, columns=("text",))
    with pytest.raises(InvalidInput, match="num_workers must be a non-negative integer"):
        sel.dataloader(8, num_workers=-1)


def test_reps_over_different_row_spaces_are_refused(qdb):
    db, values = qdb
    db.add_dataset("other", [f"t{i}" for i in range(N_EX)])
    db.write_rep("m", "final", "d", "pooled", values[("final", 0)][:N_EX], pooling="mean", dtype="float32")
    db.write_rep("m", "final", "other", "hidden.0", values[("final", 0)][:N_EX], pooling="mean", dtype="float32")
    with pytest.raises(InvalidInput, match=r"over different datasets; select one dataset: "
                                           r"\.filter\(dataset='other'\) or \.filter\(dataset='d'\)"):
        db.reps(checkpoint="final", pooling="mean").dataloader(8)
    with pytest.raises(InvalidInput, match=r"different rows \(tokens vs examples\); select one kind, e.g. "
                                           r"\.filter\(pooling='token'\)"):
        db.reps(checkpoint="final", dataset="d", site=["hidden.0", "pooled"]).dataloader(8)
    db.write_rep("m", "final", "d", "hidden.0", values[("final", 0)][: N - 9], dtype="float32",
                 tokens={k: v[: N - 9] for k, v in token_table().items()}, tokenizer="tok2")
    with pytest.raises(InvalidInput, match=r"use different token tables \(tokenizers 'tok' and 'tok2'\); "
                                           r"select one, e.g. \.filter\(tokenizer='tok'\)"):
        db.reps(checkpoint="final", site="hidden.0", dataset="d").dataloader(8)


def test_readme_example_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = [c for c in code if ".dataloader(" in c]
    assert len(example) == 1
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code[0], "README.md", "exec"), scope)  # our own README: the quickstart
    exec(compile(example[0], "README.md", "exec"), scope)  # then the loader example
    assert scope["loader"].dataset.classes == ("a", "b")
    assert scope["x"].shape == (1, 64) and scope["x"].dtype == torch.float32  # the last batch: 3 rows in 2s
    assert scope["y"].dtype == torch.int64
    scope["db"].close()
