"""Plots: rendered PNGs of the right size, not blank, labelled; no pyplot state."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from actdb import plots
from actdb.errors import InvalidInput

STEPS = {"step0": 0, "step10": 10, "step100": 100, "step1000": 1000, "final": 10000}


def row(measure: str, value: float, *, ck_a: str = "final", layer_a: int = 0, ck_b: str = "final",
        layer_b: int = 0, kind: str = "similarity", n: int = 540) -> dict[str, Any]:
    return {"measure": measure, "kind": kind, "value": value, "stderr": None, "n": n,
            "model_a": "m", "checkpoint_a": ck_a, "step_a": STEPS[ck_a], "site_a": f"hidden.{layer_a}",
            "layer_a": layer_a, "pooling_a": "token", "rep_id_a": 0, "store_a": "local",
            "model_b": "m", "checkpoint_b": ck_b, "step_b": STEPS[ck_b], "site_b": f"hidden.{layer_b}",
            "layer_b": layer_b, "pooling_b": "token", "rep_id_b": 1, "store_b": "local", "dataset": "d"}


def square(ck_a: str = "final", ck_b: str = "step10", size: int = 4,
           measure: str = "linear_cka") -> list[dict[str, Any]]:
    return [row(measure, 1 / (1 + abs(i - j)) * (0.9 if ck_a != ck_b else 1.0), ck_a=ck_a, layer_a=i, ck_b=ck_b,
                layer_b=j) for i in range(size) for j in range(size)]


def image(fig: Any, fmt: plots.ImageFormat = "png") -> Image.Image:
    return Image.open(io.BytesIO(plots.render(fig, fmt))).convert("RGB")


def distinct_colours(img: Image.Image) -> int:
    return len(np.unique(np.asarray(img).reshape(-1, 3), axis=0))


def test_heatmap_is_labelled_annotated_and_scaled_0_to_1() -> None:
    fig = plots.heatmap(square())
    ax = fig.axes[0]
    assert ax.get_title() == "linear_cka (n=540)"
    assert ax.get_ylabel() == "A: layer (model m, checkpoint final)"
    assert ax.get_xlabel() == "B: layer (model m, checkpoint step10)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["L0", "L1", "L2", "L3"]
    assert ax.images[0].get_clim() == (0.0, 1.0)
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 16 and cells[0] == "0.90" and cells[1] == "0.45"
    assert fig.axes[1].get_ylabel() == "linear_cka (similarity)"  # the colour bar
    img = image(fig)
    assert img.size[0] >= 500 and img.size[1] >= 400
    assert distinct_colours(img) > 100  # not blank: a colour ramp, text, ticks


def test_large_heatmap_is_not_annotated_and_distance_is_not_clipped_to_1() -> None:
    rows = [row("procrustes", 0.5 + i + j, kind="distance", layer_a=i, layer_b=j) for i in range(13) for j in range(13)]
    fig = plots.heatmap(rows)
    ax = fig.axes[0]
    assert len(ax.texts) == 0 and ax.images[0].get_clim() == (0.0, 24.5)


def test_trajectory_one_line_per_layer_against_step() -> None:
    rows = [row("linear_cka", 0.2 + 0.15 * k + 0.05 * layer, ck_a=ck, layer_a=layer, layer_b=layer)
            for k, ck in enumerate(["step0", "step10", "step100", "step1000"]) for layer in range(3)]
    fig = plots.trajectory(rows)
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["layer 0", "layer 1", "layer 2"]
    assert list(ax.lines[1].get_xdata()) == [0, 10, 100, 1000]
    assert ax.get_xscale() == "symlog"  # 0 .. 1000: three decades, step 0 present
    assert ax.get_title() == "linear_cka vs final by layer (n=540)"
    assert ax.get_xlabel() == "training step (m)" and ax.get_ylabel() == "linear_cka (similarity)"
    assert distinct_colours(image(fig)) > 50


def test_grid_one_panel_per_checkpoint_in_step_order() -> None:
    rows = square("final", "final") + square("step10", "step10") + square("step100", "step100")
    fig = plots.grid(rows)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == ["checkpoint step10, n=540", "checkpoint step100, n=540",
                      "checkpoint final (step 10,000), n=540"]
    assert len({ax.images[0].get_clim() for ax in fig.axes if ax.images}) == 1  # one shared colour scale
    assert distinct_colours(image(fig)) > 100


def test_svg_and_save(tmp_path: Path) -> None:
    fig = plots.heatmap(square())
    svg = plots.render(fig, "svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg and b"linear_cka" in svg
    path = plots.save(fig, tmp_path / "h.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InvalidInput, match=r"\.png or \.svg"):
        plots.save(fig, tmp_path / "h.jpg")


def test_errors_name_the_problem() -> None:
    with pytest.raises(InvalidInput, match="nothing to plot"):
        plots.heatmap([])
    with pytest.raises(InvalidInput, match=r"2 measures .*measure="):
        plots.heatmap(square() + square(measure="rsa"))
    with pytest.raises(InvalidInput, match="no results for measure 'cca'"):
        plots.heatmap(square(), measure="cca")


def trajectory_rows(stderr: bool = True) -> list[dict[str, Any]]:
    """Two layers over four checkpoints; stderr grows with the step and differs by layer."""
    out = []
    for k, ck in enumerate(["step0", "step10", "step100", "step1000"]):
        for layer in range(2):
            r = row("linear_cka", 0.3 + 0.15 * k + 0.1 * layer, ck_a=ck, layer_a=layer, layer_b=layer)
            r["stderr"] = 0.01 * (k + 1) + 0.03 * layer if stderr else None
            out.append(r)
    return out


def band_extent(band: Any) -> dict[float, tuple[float, float]]:
    """x -> (lowest y, highest y) of the band's polygon vertices, read back from the artist."""
    out: dict[float, tuple[float, float]] = {}
    for path in band.get_paths():
        for x, y in path.vertices:
            lo, hi = out.get(float(x), (np.inf, -np.inf))
            out[float(x)] = (min(lo, float(y)), max(hi, float(y)))
    return out


def bands(ax: Any) -> list[Any]:
    from matplotlib.collections import PolyCollection

    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_trajectory_shades_value_plus_minus_stderr_per_line() -> None:
    rows = trajectory_rows()
    fig = plots.trajectory(rows)
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    drawn = bands(ax)
    assert len(drawn) == 2  # one band a line
    for layer, (band, line) in enumerate(zip(drawn, ax.lines)):
        expected = {float(r["step_a"]): (r["value"] - r["stderr"], r["value"] + r["stderr"])
                    for r in rows if r["layer_a"] == layer}
        extent = band_extent(band)
        assert sorted(extent) == sorted(expected) == [0.0, 10.0, 100.0, 1000.0]
        for x, (lo, hi) in expected.items():
            assert extent[x] == pytest.approx((lo, hi), abs=1e-12), (layer, x)
        assert band.get_facecolor()[0][:3] == pytest.approx(line.get_color()[:3])  # the line's colour
    assert distinct_colours(image(fig)) > 50


def test_trajectory_two_bands_the_wider_lighter_and_none_when_asked() -> None:
    rows = trajectory_rows()
    ax = plots.trajectory(rows, stderr_bands=(1, 2)).axes[0]
    drawn = bands(ax)
    assert len(drawn) == 4
    wide, narrow = drawn[0], drawn[1]  # the first line's: wider first, underneath
    r0 = next(r for r in rows if r["layer_a"] == 0 and r["step_a"] == 100)
    assert band_extent(wide)[100.0] == pytest.approx((r0["value"] - 2 * r0["stderr"], r0["value"] + 2 * r0["stderr"]))
    assert band_extent(narrow)[100.0] == pytest.approx((r0["value"] - r0["stderr"], r0["value"] + r0["stderr"]))
    assert wide.get_alpha() < narrow.get_alpha()
    assert bands(plots.trajectory(rows, stderr_bands=()).axes[0]) == []
    with pytest.raises(InvalidInput, match="stderr_bands takes positive multiples"):
        plots.trajectory(rows, stderr_bands=(0,))


def test_trajectory_without_stderr_has_no_band_and_a_point_without_one_leaves_a_gap() -> None:
    ax = plots.trajectory(trajectory_rows(stderr=False)).axes[0]
    assert bands(ax) == [] and len(ax.lines) == 2
    rows = trajectory_rows()
    for r in rows:
        if r["step_a"] == 1000:
            r["stderr"] = None
    extent = band_extent(bands(plots.trajectory(rows).axes[0])[0])
    assert 1000.0 not in extent and sorted(extent) == [0.0, 10.0, 100.0]


def test_plots_compose_into_a_users_axes_with_bands() -> None:
    from actdb.plots import new_figure

    fig = new_figure(10, 4)
    left, right = fig.subplots(1, 2)
    assert plots.trajectory(trajectory_rows(), ax=left) is fig
    assert plots.heatmap(square(), ax=right) is fig
    assert len(bands(left)) == 2 and bands(right) == [] and len(right.images) == 1
    assert left.get_title() == "linear_cka vs final by layer (n=540)"
    assert distinct_colours(image(fig)) > 100


def test_heatmap_writes_stderr_in_cells_only_when_asked_and_computed() -> None:
    rows = square(size=2)
    for r in rows:
        r["stderr"] = 0.01 + 0.01 * r["layer_a"]
    assert [t.get_text() for t in plots.heatmap(rows).axes[0].texts] == ["0.90", "0.45", "0.45", "0.90"]
    cells = [t.get_text() for t in plots.heatmap(rows, show_stderr=True).axes[0].texts]
    assert cells == ["0.90\n±0.01", "0.45\n±0.01", "0.45\n±0.02", "0.90\n±0.02"]
    assert bands(plots.heatmap(rows, show_stderr=True).axes[0]) == []  # no band on a heatmap
    plain = [t.get_text() for t in plots.heatmap(square(size=2), show_stderr=True).axes[0].texts]
    assert plain == ["0.90", "0.45", "0.45", "0.90"]  # nothing computed: nothing changes


def test_a_computed_comparison_with_stderr_draws_its_bands(tmp_path: Path) -> None:
    """Through a real store: compare(..., stderr=True) -> ResultSet -> one band a layer whose
    extent at each step is the computed value ± its jackknife standard error."""
    import actdb

    rng = np.random.default_rng(0)
    n_ex, per_ex, dim = 40, 5, 8
    ex, pos = np.repeat(np.arange(n_ex), per_ex), np.tile(np.arange(per_ex), n_ex)
    tokens = {"example": ex, "position": pos, "token_id": (ex * 7 + pos) % 50}
    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", [f"text {i}" for i in range(n_ex)])
    base = rng.standard_normal((n_ex * per_ex, dim))
    with db.session():
        for ck, step in (("step10", 10), ("step100", 100), ("final", 1000)):
            db.add_checkpoint("m", ck, step=step)
            for layer in range(2):
                noise = rng.standard_normal(base.shape) * (0.2 + 0.3 * layer) * 100 / (step + 100)
                db.write_rep("m", ck, "d", f"hidden.{layer}", (base + noise).astype(np.float32), tokens=tokens,
                             tokenizer="tok", dtype="float32")
    result = db.reps(model="m").compare(pairs="to_reference:final", stderr=True, include_reference=True).compute()
    rows: list[dict[str, Any]] = [dict(r) for r in result.rows]
    assert all(r["stderr"] is not None for r in rows)
    ax = plots.trajectory(result).axes[0]
    drawn = bands(ax)
    assert len(drawn) == len(ax.lines) == 2
    for layer, band in enumerate(drawn):
        extent = band_extent(band)
        mine = [r for r in rows if r["layer_a"] == layer]
        assert sorted(extent) == sorted(float(r["step_a"]) for r in mine) == [10.0, 100.0, 1000.0]
        for r in mine:
            assert extent[float(r["step_a"])] == pytest.approx((r["value"] - r["stderr"], r["value"] + r["stderr"]))
    assert any(r["stderr"] > 0 for r in rows)
    db.close()


def test_no_pyplot_state() -> None:
    before = sys.modules.get("matplotlib.pyplot")
    plots.render(plots.heatmap(square()))
    plots.render(plots.trajectory(square()))
    after = sys.modules.get("matplotlib.pyplot")
    if before is None:
        assert after is None, "plots imported pyplot"
    else:
        assert before.get_fignums() == []
