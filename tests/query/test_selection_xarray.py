"""Selection.to_xarray(): many reps as one lazy, labelled, dask-backed array."""

from __future__ import annotations

import numpy as np
import pytest
from query_data import DIM, N_EX, STEPS, TOK_PER_EX, token_table

from actdb.errors import InvalidInput

xr = pytest.importorskip("xarray")
N_ROWS = N_EX * TOK_PER_EX


def test_dims_coords_and_values_of_checkpoints_by_layers(qdb):
    db, values = qdb
    x = db.reps(model="m", site="hidden.*").to_xarray()
    assert isinstance(x, xr.DataArray)
    assert x.dims == ("step", "layer", "row", "feature") and x.shape == (3, 4, N_ROWS, DIM)
    assert x.coords["step"].values.tolist() == [10, 100, 1000]
    assert x.coords["checkpoint"].values.tolist() == ["step10", "step100", "final"]
    assert x.coords["layer"].values.tolist() == [0, 1, 2, 3]
    assert x.coords["site"].values.tolist() == [f"hidden.{i}" for i in range(4)]
    assert x.coords["model"].item() == "m"
    tokens = token_table()
    assert x.coords["example"].values.tolist() == tokens["example"].tolist()
    assert x.coords["position"].values.tolist() == tokens["position"].tolist()
    assert x.attrs == {"dataset": "d", "pooling": "token", "dtype": "float32", "tokenizer": "tok", "store": "local"}
    assert x.chunks is not None and x.data.chunksize == (1, 1, 64, DIM)  # the stored chunks
    for ck, step in STEPS.items():
        for layer in range(4):
            h = db.rep(model="m", checkpoint=ck, site=f"hidden.{layer}")
            got = x.sel(step=step, layer=layer).values
            assert got.dtype == np.float32 and np.array_equal(got, h.to_numpy())
            assert np.array_equal(got, values[(ck, layer)])


def test_nothing_is_read_until_values_and_a_slice_reads_only_its_chunks(qdb, reads):
    db, values = qdb
    x = db.reps(model="m").to_xarray()
    layer3 = x.sel(layer=3)
    assert not reads  # building, labelling and slicing lazily read no chunk
    got = layer3.values
    paths = {db.rep(model="m", checkpoint=ck, site="hidden.3").path for ck in STEPS}
    n_chunks = -(-N_ROWS // 64)
    assert {p for p, _ in reads} == paths  # only layer 3's reps
    assert sorted(reads) == sorted((p, c) for p in paths for c in range(n_chunks))
    assert set(reads.values()) == {1}  # each of their chunks once
    assert np.array_equal(got[1], values[("step100", 3)])
    reads.clear()
    part = x.sel(step=1000, layer=0).isel(row=slice(64, 128)).values
    assert list(reads) == [(db.rep(model="m", checkpoint="final", site="hidden.0").path, 1)]
    assert np.array_equal(part, values[("final", 0)][64:128])


def test_a_counting_reader_behind_the_storage_protocol_sees_only_the_slice(qdb):
    db, _ = qdb
    sel = db.reps(model="m", checkpoint="final")
    ranges: list[tuple[int, tuple[int, int]]] = []

    class Counting:
        """The Storage of the selection, with every rep's row reads recorded."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def open_rows(self, rep):
            arr = self.inner.open_rows(rep)
            from actdb.store.arrays import choose_reader

            def reader(opened):
                inner = choose_reader(opened)

                class Rows:
                    def read(self, start, stop):
                        ranges.append((rep.rep_id, (start, stop)))
                        return inner.read(start, stop)

                return Rows()

            return arr.with_reader(reader)

    from actdb.query.selection import Selection

    x = Selection(Counting(sel.storage), sel.matches).to_xarray()
    assert ranges == []
    x.sel(layer=2).isel(row=slice(0, 10)).values  # noqa: B018
    assert ranges == [(db.rep(model="m", checkpoint="final", site="hidden.2").rep_id, (0, 64))]


def test_several_widths_give_a_dataset_one_variable_per_width(qdb):
    db, values = qdb
    rng = np.random.default_rng(1)
    wide = {}
    with db.session():
        for ck, step in STEPS.items():
            db.add_checkpoint("w", ck, step=step)
            for layer in range(4):
                wide[(ck, layer)] = rng.standard_normal((N_ROWS, 2 * DIM)).astype(np.float32)
                db.write_rep("w", ck, "d", f"hidden.{layer}", wide[(ck, layer)], tokens=token_table(),
                             tokenizer="tok", dtype="float32")
    ds = db.reps(model=["m", "w"]).to_xarray()
    assert isinstance(ds, xr.Dataset) and set(ds.data_vars) == {"m", "w"}
    assert ds["m"].dims == ("step", "layer", "row", f"feature_{DIM}")
    assert ds["w"].dims == ("step", "layer", "row", f"feature_{2 * DIM}")
    assert ds["w"].attrs["model"] == "w" and ds["m"].attrs["model"] == "m"
    assert np.array_equal(ds["w"].sel(step=100, layer=1).values, wide[("step100", 1)])
    assert np.array_equal(ds["m"].sel(step=10, layer=3).values, values[("step10", 3)])


def test_mixed_row_spaces_are_refused_naming_the_fix(qdb):
    db, _ = qdb
    pooled = np.ones((N_EX, DIM), np.float32)
    db.write_rep("m", "final", "d", "hidden.0", pooled, pooling="mean", dtype="float32")
    with pytest.raises(InvalidInput, match=r"pooled differently; select one pooling: \.filter\(pooling="):
        db.reps(model="m").to_xarray()
    db.add_dataset("other", [f"text {i}" for i in range(N_EX)])
    db.write_rep("m", "final", "other", "hidden.1", pooled, pooling="mean", dtype="float32")
    with pytest.raises(InvalidInput, match=r"different datasets; select one dataset: \.filter\(dataset="):
        db.reps(model="m", pooling="mean").to_xarray()
    x = db.reps(model="m", pooling="mean", dataset="d").to_xarray()  # the fix: one row space
    assert x.dims == ("row", "feature") and x.coords["example"].values.tolist() == list(range(N_EX))


def test_an_incomplete_grid_and_an_empty_selection_are_refused(qdb):
    db, _ = qdb
    db.write_rep("m", "final", "d", "hidden.4", np.ones((N_ROWS, DIM), np.float32), tokens=token_table(),
                 tokenizer="tok", dtype="float32")
    with pytest.raises(InvalidInput, match=r"full grid: no rep at step=10, layer=4"):
        db.reps(model="m").to_xarray()
    assert db.reps(model="m", layer=slice(0, 4)).to_xarray().shape == (3, 4, N_ROWS, DIM)
    with pytest.raises(InvalidInput, match="matches no complete rep"):
        db.reps(model="nope").to_xarray()
