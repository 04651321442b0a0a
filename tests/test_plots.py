"""Plots: rendered PNGs of the right size, not blank, labelled; no pyplot state."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from actdb import plots
from actdb.errors import InvalidInput

STEPS = {"step0": 0, "step10": 10, "step100": 100, "step1000": 1000, "final": 10000}


def row(measure: str, value: float, *, ck_a: str = "final", layer_a: int = 0, ck_b: str = "final",
        layer_b: int = 0, kind: str = "similarity", n: int = 540) -> dict:
    return {"measure": measure, "kind": kind, "value": value, "stderr": None, "n": n,
            "model_a": "m", "checkpoint_a": ck_a, "step_a": STEPS[ck_a], "site_a": f"hidden.{layer_a}",
            "layer_a": layer_a, "pooling_a": "token", "rep_id_a": 0, "store_a": "local",
            "model_b": "m", "checkpoint_b": ck_b, "step_b": STEPS[ck_b], "site_b": f"hidden.{layer_b}",
            "layer_b": layer_b, "pooling_b": "token", "rep_id_b": 1, "store_b": "local", "dataset": "d"}


def square(ck_a: str = "final", ck_b: str = "step10", size: int = 4, measure: str = "linear_cka") -> list[dict]:
    return [row(measure, 1 / (1 + abs(i - j)) * (0.9 if ck_a != ck_b else 1.0), ck_a=ck_a, layer_a=i, ck_b=ck_b,
                layer_b=j) for i in range(size) for j in range(size)]


def image(fig, fmt: str = "png") -> Image.Image:  # type: ignore[no-untyped-def]
    return Image.open(io.BytesIO(plots.render(fig, fmt))).convert("RGB")


def distinct_colours(img: Image.Image) -> int:
    return len(np.unique(np.asarray(img).reshape(-1, 3), axis=0))


def test_heatmap_is_labelled_annotated_and_scaled_0_to_1():
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


def test_large_heatmap_is_not_annotated_and_distance_is_not_clipped_to_1():
    rows = [row("procrustes", 0.5 + i + j, kind="distance", layer_a=i, layer_b=j) for i in range(13) for j in range(13)]
    fig = plots.heatmap(rows)
    ax = fig.axes[0]
    assert len(ax.texts) == 0 and ax.images[0].get_clim() == (0.0, 24.5)


def test_trajectory_one_line_per_layer_against_step():
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


def test_grid_one_panel_per_checkpoint_in_step_order():
    rows = square("final", "final") + square("step10", "step10") + square("step100", "step100")
    fig = plots.grid(rows)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == ["checkpoint step10, n=540", "checkpoint step100, n=540",
                      "checkpoint final (step 10,000), n=540"]
    assert len({ax.images[0].get_clim() for ax in fig.axes if ax.images}) == 1  # one shared colour scale
    assert distinct_colours(image(fig)) > 100


def test_svg_and_save(tmp_path):
    fig = plots.heatmap(square())
    svg = plots.render(fig, "svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg and b"linear_cka" in svg
    path = plots.save(fig, tmp_path / "h.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InvalidInput, match=r"\.png or \.svg"):
        plots.save(fig, tmp_path / "h.jpg")


def test_errors_name_the_problem():
    with pytest.raises(InvalidInput, match="nothing to plot"):
        plots.heatmap([])
    with pytest.raises(InvalidInput, match="2 measures .*measure="):
        plots.heatmap(square() + square(measure="rsa"))
    with pytest.raises(InvalidInput, match="no rows for measure 'cca'"):
        plots.heatmap(square(), measure="cca")


def test_no_pyplot_state():
    before = sys.modules.get("matplotlib.pyplot")
    plots.render(plots.heatmap(square()))
    plots.render(plots.trajectory(square()))
    after = sys.modules.get("matplotlib.pyplot")
    if before is None:
        assert after is None, "plots imported pyplot"
    else:
        assert before.get_fignums() == []
