"""ResultSet.matrix / to_xarray / pivot: long-form results laid out as matrices."""

from __future__ import annotations

import numpy as np
import pytest

from actdb.errors import InvalidInput
from actdb.query.executor import ResultSet
from actdb.query.measures import linear_cka, linear_regression


def test_matrix_fills_symmetric_pairs_from_their_mirror(qdb):
    db, values = qdb
    some, every = db.reps(checkpoint="final", layer=[0, 1]), db.reps(checkpoint="final")
    result = some.compare(every).compute()  # rows: layers 0-1 only; columns: layers 0-3
    assert len(result) == 8
    m = result.matrix()
    assert m.shape == (4, 4) and list(m.index) == [0, 1, 2, 3] and list(m.columns) == [0, 1, 2, 3]
    assert m.index.name == "layer_a" and m.columns.name == "layer_b" and m.attrs["measure"] == "linear_cka"
    for i in range(2):
        for j in range(4):
            direct = linear_cka(values[("final", i)], values[("final", j)])
            assert m.loc[i, j] == pytest.approx(direct, abs=1e-6)
            assert m.loc[j, i] == m.loc[i, j]  # the mirror: computed once, filled once
    assert np.isnan(m.loc[2, 3]) and np.isnan(m.loc[3, 2]) and np.isnan(m.loc[2, 2])  # never computed


def test_an_asymmetric_measure_is_not_mirrored(qdb):
    db, values = qdb
    result = db.reps(checkpoint="final", layer=0).compare(db.reps(checkpoint="final", layer=[0, 1]),
                                                          measure="linear_regression").compute()
    m = result.matrix()
    assert m.loc[0, 1] == pytest.approx(linear_regression(values[("final", 0)], values[("final", 1)]), abs=1e-6)
    assert np.isnan(m.loc[1, 0])


def test_cross_checkpoint_layers_and_rep_labels(qdb):
    db, values = qdb
    result = db.reps(checkpoint="step100").compare(db.reps(checkpoint="final"), pairs="all").compute()
    m = result.matrix()  # each side differs only by layer: layer x layer, not square by union
    assert m.shape == (4, 4) and not m.isna().any().any()
    assert m.loc[3, 1] == pytest.approx(linear_cka(values[("step100", 3)], values[("final", 1)]), abs=1e-6)
    mixed = db.reps(layer=2).compare(db.reps(checkpoint="final", layer=[1, 2])).compute().matrix()
    assert list(mixed.index) == ["m/step10/hidden.2", "m/step100/hidden.2", "m/final/hidden.1",
                                 "m/final/hidden.2"]
    assert mixed.index.name == "a" and list(mixed.columns) == list(mixed.index)


def test_to_xarray_labels_both_dims(qdb):
    db, values = qdb
    result = db.reps(checkpoint="step10").compare(db.reps(checkpoint="final", layer=[0, 3])).compute()
    x = result.to_xarray()
    assert x.dims == ("a", "b") and x.shape == (4, 2) and x.name == "linear_cka"
    assert x.a.values.tolist() == [0, 1, 2, 3] and x.b.values.tolist() == [0, 3]
    assert x.checkpoint_a.values.tolist() == ["step10"] * 4 and x.step_b.values.tolist() == [1000, 1000]
    assert x.site_b.values.tolist() == ["hidden.0", "hidden.3"]
    assert float(x.sel(a=2, b=3)) == pytest.approx(linear_cka(values[("step10", 2)], values[("final", 3)]),
                                                   abs=1e-6)


def test_pivot_is_a_trajectory_table(qdb):
    db, values = qdb
    result = db.reps().compare(pairs="to_reference:final", measure=["linear_cka", "procrustes"]).compute()
    table = result.pivot(index="step_a", columns="layer_a", measure="linear_cka")
    assert list(table.index) == [10, 100] and list(table.columns) == [0, 1, 2, 3]
    assert table.loc[100, 2] == pytest.approx(linear_cka(values[("step100", 2)], values[("final", 2)]), abs=1e-6)
    with pytest.raises(InvalidInput, match=r"2 measures \(linear_cka, procrustes\); name one with measure="):
        result.matrix()
    with pytest.raises(InvalidInput, match=r"pivot: no column\(s\) \['layer'\]; the results have measure"):
        result.pivot(index="step_a", columns="layer", measure="procrustes")
    with pytest.raises(InvalidInput, match="several results share one"):
        result.pivot(index="step_a", columns="checkpoint_b", measure="procrustes")
    with pytest.raises(InvalidInput, match="no results for measure 'rsa'"):
        result.matrix("rsa")


def test_two_values_for_one_cell_are_refused(qdb):
    db, _ = qdb
    sel = db.reps(checkpoint="final", layer=[0, 1])
    everything = sel.compare().compute()
    negatives = sel.compare(subset="label = 'neg'").compute()
    with pytest.raises(InvalidInput, match="differ in dataset, subset, align or params"):
        ResultSet(everything.rows + negatives.rows).matrix()
    with pytest.raises(InvalidInput, match="results are empty"):
        ResultSet([]).matrix()


def test_plots_draw_into_a_given_axes(qdb):
    from actdb.plots import heatmap, new_figure, render, trajectory

    db, _ = qdb
    square = db.reps(checkpoint="final").compare().compute()
    over_training = db.reps().compare(pairs="to_reference:final").compute()
    fig = new_figure(10, 4)
    left, right = fig.subplots(1, 2)
    assert heatmap(square, ax=left) is fig and trajectory(over_training, ax=right) is fig
    assert len(left.images) == 1 and left.images[0].get_array().shape == (4, 4)
    assert len(right.lines) == 4  # one line a layer
    assert len(fig.axes) == 3  # the two panels and the heatmap's colour bar, no new figure
    assert render(fig)[:4] == b"\x89PNG"
    with pytest.raises(InvalidInput, match="ax= takes a matplotlib Axes"):
        heatmap(square, ax="left")
