"""db.rep(...) / Selection.one() / iterating a selection: rep handles and their readers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from query_data import DIM, LABELS, N_EX, TOK_PER_EX, token_table

from actdb.errors import InvalidInput, NotFound
from actdb.query.handle import RepHandle
from actdb.store.records import RepRecord


def test_rep_by_name_reads_values_in_stored_precision(qdb):
    db, values = qdb
    h = db.rep(model="m", checkpoint="step100", site="hidden.2")
    assert isinstance(h, RepHandle) and h.layer == 2 and h.step == 100 and h.shape == (N_EX * TOK_PER_EX, DIM)
    full = h.to_numpy()
    assert full.dtype == np.float32 and np.array_equal(full, values[("step100", 2)])
    assert np.array_equal(h.to_numpy(rows=slice(70, 140)), values[("step100", 2)][70:140])
    idx = np.array([300, 5, -1, 64])
    assert np.array_equal(h.to_numpy(rows=idx), values[("step100", 2)][idx])
    assert h.to_numpy(rows=slice(0, 10, 3)).shape == (4, DIM)
    assert h.to_numpy(dtype="float64").dtype == np.float64
    # db.read_rep takes the handle as it took the record
    assert np.array_equal(db.read_rep(h)[0:3], values[("step100", 2)][:3])


def test_to_numpy_reads_only_the_chunks_of_the_rows(qdb, reads):
    db, _ = qdb
    h = db.rep(model="m", checkpoint="final", site="hidden.0")
    assert not reads  # making a handle reads nothing
    h.to_numpy(rows=slice(64, 128))
    assert set(reads) == {(h.path, 1)}


def test_to_torch_shares_memory_and_converts(qdb):
    db, values = qdb
    h = db.rep(model="m", checkpoint="final", site="hidden.1")
    t = h.to_torch()
    assert t.dtype == torch.float32 and tuple(t.shape) == h.shape
    assert np.array_equal(t.numpy(), values[("final", 1)])
    assert h.to_torch(dtype=torch.float16).dtype == torch.float16
    assert h.to_torch(dtype="float64", device="cpu").dtype == torch.float64
    with pytest.raises(InvalidInput, match="not a torch dtype"):
        h.to_torch(dtype="floaty")


def test_tokens_join_labels(qdb):
    db, _ = qdb
    tokens = db.rep(model="m", checkpoint="final", site="hidden.1").tokens()
    expected = token_table()
    assert tokens.num_rows == N_EX * TOK_PER_EX
    assert tokens.column("row").to_pylist() == list(range(tokens.num_rows))
    for name in ("example", "position", "token_id", "char_start", "char_end"):
        assert tokens.column(name).to_pylist() == expected[name].tolist(), name
    assert tokens.column("label").to_pylist() == [LABELS[e] for e in expected["example"]]


def test_by_example_matches_a_padded_layout(tmp_path):
    import actdb

    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", ["a b c", "d", "e f"], labels=["x", "y", "x"])
    db.add_checkpoint("m", "final")
    rows = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    tokens = {"example": [0, 0, 0, 1, 2, 2], "position": [0, 1, 2, 0, 0, 1], "token_id": [1, 2, 3, 4, 5, 6]}
    db.write_rep("m", "final", "d", "hidden.0", rows, tokens=tokens, tokenizer="t", dtype="float32")
    db.write_rep("m", "final", "d", "hidden.0", rows[:3], pooling="mean", dtype="float32")
    values, mask = db.rep(model="m", pooling="token").by_example()
    assert values.shape == (3, 3, 4) and mask.shape == (3, 3) and mask.dtype == bool
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert np.array_equal(values[0], rows[0:3]) and np.array_equal(values[1, 0], rows[3])
    assert np.array_equal(values[2, :2], rows[4:6])
    assert not values[1, 1:].any() and not values[2, 2].any()
    pooled = db.rep(model="m", pooling="mean")
    with pytest.raises(InvalidInput, match=r"pooled \('mean'\): it already has one row per example"):
        pooled.by_example()
    labels = pooled.tokens()
    assert labels.column_names == ["row", "example", "label", "split"]
    assert labels.column("label").to_pylist() == ["x", "y", "x"]


def test_to_xarray_labels_rows(qdb):
    db, values = qdb
    h = db.rep(model="m", checkpoint="step10", site="hidden.3")
    x = h.to_xarray()
    assert x.dims == ("row", "feature") and x.shape == h.shape
    assert np.array_equal(x.values, values[("step10", 3)])
    assert x.attrs["model"] == "m" and x.attrs["layer"] == 3 and x.attrs["step"] == 10
    neg = x.where(x.label == "neg", drop=True)
    assert neg.sizes["row"] == sum(LABELS[e] == "neg" for e in token_table()["example"])
    first_tokens = x.sel(row=x.position == 0)
    assert first_tokens.sizes["row"] == N_EX and set(first_tokens.example.values.tolist()) == set(range(N_EX))
    part = h.to_xarray(rows=slice(10, 20))
    assert part.row.values.tolist() == list(range(10, 20)) and part.position.values.tolist()[0] == 1


def test_rows_out_of_range_say_the_range(qdb):
    db, _ = qdb
    h = db.rep(model="m", checkpoint="final", site="hidden.0")
    n = h.n_rows
    with pytest.raises(InvalidInput, match=rf"out of range .*\({n} rows\)"):
        h.to_numpy(rows=slice(0, n + 1))
    with pytest.raises(InvalidInput, match=rf"row {n} is out of range .* from 0 to {n - 1}"):
        h.to_numpy(rows=[0, n])
    with pytest.raises(InvalidInput, match="1-d array of row numbers"):
        h.to_numpy(rows=np.array([[1, 2]]))
    with pytest.raises(InvalidInput, match="1-d array of row numbers"):
        h.to_numpy(rows=[0.5])


def test_no_match_names_the_filter_and_close_values(qdb):
    db, _ = qdb
    with pytest.raises(NotFound, match=r"site=hidden\.9 matches none of the 4 rep\(s\) .* did you mean 'hidden\.3'"):
        db.rep(model="m", checkpoint="final", site="hidden.9")
    with pytest.raises(NotFound, match=r"checkpoint: did you mean 'final'"):
        db.rep(model="m", checkpoint="finall", site="hidden.1")


def test_several_matches_list_them_and_what_differs(qdb):
    db, _ = qdb
    with pytest.raises(InvalidInput) as info:
        db.rep(model="m", site="hidden.1")
    message = str(info.value)
    assert "matches 3 reps, not one" in message
    assert "m/step10/hidden.1" in message and "m/final/hidden.1" in message
    assert "add a filter on checkpoint ('final', 'step10', 'step100')" in message
    with pytest.raises(InvalidInput, match=r"matches 12 reps.* and 2 more; add a filter on checkpoint .* or site"):
        db.reps(model="m").one()


def test_rep_keeps_the_id_form(qdb):
    db, _ = qdb
    h = db.rep(model="m", checkpoint="final", site="hidden.0")
    assert db.rep(h.rep_id).status == "complete"  # positional id: the catalog record, as before
    assert db.rep(rep_id=h.rep_id) == h
    with pytest.raises(InvalidInput, match="not both"):
        db.rep(h.rep_id, model="m")
    with pytest.raises(InvalidInput, match="needs filters"):
        db.rep()


def test_iterating_a_selection_yields_handles_equal_to_records(qdb):
    db, _ = qdb
    sel = db.reps(checkpoint="final")
    handles = list(sel)
    records = sel.resolve()
    assert all(isinstance(h, RepHandle) for h in handles) and all(isinstance(r, RepRecord) for r in records)
    assert handles == records and {h.key for h in handles} == {r.key for r in records}
    assert set(handles) == set(records)
    assert [h.label() for h in handles] == [r.label() for r in records]
    assert sel.filter(layer=1).one() == records[1]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        handles[0].nope  # noqa: B018


def test_readme_getting_activations_out_runs(tmp_path, monkeypatch):
    """The README's "One rep by name" block runs as written after the quickstart (in its scope)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    quickstart = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    section = readme.split("### One rep by name, and results as matrices", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)  # type: ignore[union-attr]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(quickstart, "README.md", "exec"), scope)  # our own README
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["X"].shape == (5, 32) and scope["X"].dtype == np.float16
    assert scope["T"].dtype == torch.float32
    assert scope["values"].shape == (3, 2, 32) and scope["mask"].sum() == 5
    assert scope["da"].dims == ("row", "feature") and scope["label_a"].shape == (32,)
    assert scope["m"].shape == (3, 3) and list(scope["m"].index) == [0, 1, 2]
    assert scope["xm"].dims == ("a", "b")
    assert list(scope["table"].index) == [100, 1000] and list(scope["table"].columns) == [0, 1, 2]
    assert scope["tokens"].column("label").to_pylist() == ["a", "a", "b", "b", "a"]
    scope["db"].close()
