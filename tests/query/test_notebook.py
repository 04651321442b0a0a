"""Notebook display (``_repr_html_`` of selections, plans and results) and compute()'s progress bar."""

from __future__ import annotations

import html
import sys
import types

import numpy as np
import pytest
from query_data import N_EX, TOK_PER_EX

import actdb
from actdb.errors import InvalidInput
from actdb.progress import ComputeProgress, wanted
from actdb.query import html as H

# names users (or attached stores) may give: every one is legal, and must reach HTML escaped
HOSTILE_MODELS = ["<script>alert(1)</script>", "x' onmouseover='alert(1)"]
HOSTILE_CHECKPOINT = "\"><script>alert(2)"
HOSTILE_DATASET = "<img src=x onerror=alert(3)>"


def test_selection_html_lists_the_reps_from_the_catalog(qdb, reads):
    db, _ = qdb
    page = db.reps(checkpoint="final")._repr_html_()
    assert page.count("<tr>") == 1 + 4  # the header and one row a rep
    for text in ("Selection(checkpoint=final)", "4 rep(s)", "hidden.3", f"{N_EX * TOK_PER_EX:,} × 24", "float32",
                 "<td>local</td>", "<td>1000</td>", "<td>token</td>"):
        assert text in page
    assert "more" not in page
    assert reads == {}  # catalog only


def test_tables_are_capped(qdb, monkeypatch):
    db, _ = qdb
    monkeypatch.setattr(H, "MAX_ROWS", 5)
    page = db.reps()._repr_html_()
    assert page.count("<tr>") == 1 + 5 and "… 7 more" in page and "12 rep(s)" in page
    result = db.reps(checkpoint="final").compare().compute()
    page = result._repr_html_()
    assert "16 row(s)" in page and "… 11 more" in page


def test_comparison_html_is_its_explain_and_reads_nothing(qdb, reads):
    db, _ = qdb
    plan = db.reps(checkpoint="final").compare(measure=["linear_cka", "procrustes"])
    page = plan._repr_html_()
    assert page == f"<pre>{html.escape(plan.explain(show=False))}</pre>"
    assert "16 pairs x 2 measure(s)" in page
    assert reads == {}


def test_result_html_shows_values_and_a_heatmap_when_square(qdb):
    db, _ = qdb
    result = db.reps(checkpoint="final").compare().compute()
    page = result._repr_html_()
    for r in result.rows:
        assert f"<td>{r['value']:.4g}</td>" in page
    assert "m/final/hidden.2" in page and "<td>moments</td>" in page and "stderr" not in page
    assert page.count("class='actdb-heatmap'") == 1
    assert page.count("<td title=") == 16  # 4 x 4 cells
    matrix = result.matrix()
    assert f"title='1 vs 3: {matrix.loc[1, 3]:.4g}'" in page
    # the largest value is the lightest colour of the ramp, the smallest the darkest
    assert "background:#fde725" in page and "background:#440154" in page


def test_no_heatmap_unless_one_measure_over_a_square(qdb):
    db, _ = qdb
    final = db.reps(checkpoint="final")
    two = final.compare(measure=["linear_cka", "procrustes"]).compute()._repr_html_()
    assert "actdb-heatmap" not in two and "procrustes" in two
    sides = db.reps(checkpoint="step10").compare(final).compute()._repr_html_()  # 4 x 4, different reps
    assert "actdb-heatmap" not in sides and "m/step10/hidden.0" in sides
    one = db.reps(checkpoint="final", layer=0).compare().compute()._repr_html_()
    assert "actdb-heatmap" not in one
    assert "actdb-heatmap" not in H.result_html([])


def test_stderr_column_only_when_computed(qdb):
    db, _ = qdb
    result = db.reps(checkpoint="final", layer=[0, 1]).compare(stderr=True).compute()
    page = result._repr_html_()
    assert "<th>stderr</th>" in page and f"<td>{result.rows[1]['stderr']:.4g}</td>" in page


def test_hostile_names_are_escaped(tmp_path):
    db = actdb.open(str(tmp_path / "h"))
    n = 6
    db.add_dataset(HOSTILE_DATASET, [f"text {i}" for i in range(n)])
    rng = np.random.default_rng(0)
    for model in HOSTILE_MODELS:
        for layer in (0, 1):
            db.write_rep(model, HOSTILE_CHECKPOINT, HOSTILE_DATASET, f"hidden.{layer}",
                         rng.standard_normal((n, 4)), pooling="mean")
    sel = db.reps(checkpoint=HOSTILE_CHECKPOINT)
    plan = sel.compare()
    result = db.reps(layer=0).compare().compute()  # two models: labelled by name, not by layer
    pages = [sel._repr_html_(), plan._repr_html_(), result._repr_html_()]
    assert "actdb-heatmap" in pages[2]
    for page in pages:
        assert "<script" not in page.lower() and "<img" not in page.lower()
        assert "onmouseover='" not in page  # no attribute broken out of
    assert html.escape(HOSTILE_MODELS[0]) in pages[0] and html.escape(HOSTILE_CHECKPOINT) in pages[1]
    assert html.escape(f"{HOSTILE_MODELS[1]}/{HOSTILE_CHECKPOINT}/hidden.0[mean]") in pages[2]


def test_compute_progress_writes_a_bar_only_when_asked(qdb, capsys):
    db, _ = qdb
    plan = db.reps(checkpoint="final").compare(measure=["linear_cka", "procrustes"])
    plan.compute(recompute=True, progress=False)
    assert capsys.readouterr().err == ""
    plan.compute(recompute=True)  # the default: stderr is not a terminal under pytest, so no bar
    assert capsys.readouterr().err == ""
    plan.compute(recompute=True, progress=True)
    err = capsys.readouterr().err
    assert "compute, 20/20 values" in err and "100%" in err and "MiB read" in err
    assert "pass 1/1" in err or err.count("compute") >= 2
    plan.compute(progress=True)  # everything cached: nothing to show
    assert capsys.readouterr().err == ""
    with pytest.raises(InvalidInput, match="progress must be True, False or None"):
        plan.compute(progress="yes")  # type: ignore[arg-type]


def test_compute_progress_counts_passes_and_gram_values(qdb, capsys, monkeypatch):
    db, _ = qdb
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # draw every update (tqdm reads its defaults from TQDM_*)
    # a small budget: several passes; rbf_cka runs on the gram route (counted as it is computed)
    db.reps(checkpoint="final").compare(measure=["linear_cka", "rbf_cka"]).compute(
        recompute=True, memory_budget=30_000, progress=True)
    err = capsys.readouterr().err
    assert "compute, 20/20 values" in err
    passes = {part.split("/")[1].split(",")[0] for part in err.split("pass ")[1:]}
    assert len(passes) == 1 and int(passes.pop()) > 1


def test_a_pass_moves_the_bar_with_the_rows_read():
    tracker = ComputeProgress(10, False)
    on_rows = tracker.begin_pass(0, 1, 10, 1000, 96.0)
    moved = []
    tracker.bar.advance = moved.append  # type: ignore[method-assign]
    on_rows(250)
    on_rows(250)
    assert moved == [2.5, 2.5] and tracker.read == 500 * 96.0 and tracker.done == 0
    on_rows(900)  # more rows than announced (a pass run again) never moves the bar past the pass
    tracker.finish(10)
    assert sum(moved) == 10 and tracker.done == 10
    tracker.close()


def test_wanted(capsys, monkeypatch):
    assert wanted(True) and not wanted(False)
    assert not wanted(None)  # captured stderr: not a terminal, not a notebook
    kernel = types.SimpleNamespace(config={"IPKernelApp": {}})  # what IPython's get_ipython() is in Jupyter
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    assert wanted(None) and not wanted(False)
    terminal = types.SimpleNamespace(config={})  # plain IPython in a terminal (stderr captured here)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: terminal))
    assert not wanted(None)


def test_dask_executor_ticks_the_bar_per_finished_task(qdb, capsys, monkeypatch):
    db, _ = qdb
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    db.reps(checkpoint="final").compare().compute(executor="dask", recompute=True, progress=True)
    err = capsys.readouterr().err
    assert "compute, 10/10 values, 0.2 MiB read" in err
    # (these rows make one dask task:) the task finished, its rows read, the pass not yet settled
    assert "compute, 0/10 values, pass 1/1, 0.2 MiB read 100%" in err
