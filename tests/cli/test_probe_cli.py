"""`actdb plot STORE probe` and plots.probe: probe accuracy by layer or by training step."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _query_data import query_data

import actdb
from actdb import plots
from actdb.errors import InvalidInput


@pytest.fixture(scope="module")
def store(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("probe_cli") / "s"
    db = actdb.open(str(path))
    query_data().fill(db)
    db.close()
    return path


def test_plot_probe_writes_an_image_and_caches_the_probes(store, tmp_path):
    target = tmp_path / "probe.png"
    out = subprocess.run([sys.executable, "-m", "actdb", "plot", str(store), "probe", "--a", "model=m",
                          "--label", "label", "--method", "ridge", "--folds", "3", "-o", str(target)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    db = actdb.open(str(store))
    rows = db.sql("SELECT step, layer, accuracy FROM probes WHERE folds = 3").to_pylist()
    assert len(rows) == 12 and all(0.0 <= r["accuracy"] <= 1.0 for r in rows)  # 3 checkpoints x 4 layers
    found = db.reps(model="m").probe(folds=3)
    assert found["cached"].all()
    fig = plots.probe(found, by="step")  # one line per layer
    assert len(fig.axes[0].get_lines()) == 4
    fig = plots.probe(db.sql("SELECT * FROM probes WHERE folds = 3"), by="layer")  # one line per checkpoint
    assert len(fig.axes[0].get_lines()) == 3
    with pytest.raises(InvalidInput, match="by='depth'"):
        plots.probe(found, by="depth")
