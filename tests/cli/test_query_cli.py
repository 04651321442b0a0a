"""compare, plot, export and the command docs, run as a user runs them: a real `actdb` process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _query_data import query_data

import actdb
from actdb.query.measures import linear_cka

ROOT = Path(__file__).parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actdb", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def store(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("cli") / "s"
    db = actdb.open(str(path))
    query_data().fill(db)
    db.close()
    return path


def test_compare_csv_json_and_values(store):
    out = run("compare", str(store), "--a", "checkpoint=final,layer=0:2", "--b", "checkpoint=step10",
              "--pairs", "same_layer", "--measure", "linear_cka", "--measure", "procrustes", "-f", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["measure"], r["layer_a"], r["layer_b"]) for r in rows] == [
        ("linear_cka", 0, 0), ("procrustes", 0, 0), ("linear_cka", 1, 1), ("procrustes", 1, 1)]
    values = query_data().make_values(0)
    want = linear_cka(values[("final", 1)].astype(np.float64), values[("step10", 1)])
    assert rows[2]["value"] == pytest.approx(want, rel=1e-9)
    out = run("compare", str(store), "--a", "checkpoint=final,layer=0:2", "--b", "checkpoint=step10",
              "--pairs", "same_layer", "-f", "csv")
    header, *lines = out.stdout.strip().splitlines()
    assert header.startswith('"measure","kind","value"') and len(lines) == 2
    assert all('"cached"' not in line and ",true," in line for line in lines)  # cached by the first run


def test_compare_with_stderr(store):
    out = run("compare", str(store), "--a", "checkpoint=final,layer=2", "--b", "checkpoint=step100,layer=2",
              "--pairs", "same_layer", "--stderr", "-f", "json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    values = query_data().make_values(0)
    want, want_se = linear_cka(values[("final", 2)].astype(np.float64), values[("step100", 2)], stderr=True)
    assert row["value"] == pytest.approx(want, rel=1e-9) and row["stderr"] == pytest.approx(want_se, rel=1e-6)
    table = run("compare", str(store), "--a", "checkpoint=final,layer=2", "--b", "checkpoint=step100,layer=2",
                "--pairs", "same_layer", "--stderr")
    assert table.returncode == 0 and "stderr" in table.stdout


def test_compare_table_parquet_and_explain(store, tmp_path):
    out = run("compare", str(store), "--a", "model=m,layer=3", "--pairs", "consecutive")
    assert out.returncode == 0 and "linear_cka (2 values)" in out.stdout and "step10" in out.stdout
    target = tmp_path / "r.parquet"
    out = run("compare", str(store), "--a", "layer=3", "--pairs", "to_reference:final", "-f", "parquet",
              "-o", str(target))
    assert out.returncode == 0, out.stderr
    table = pq.read_table(target)
    assert table.column("checkpoint_a").to_pylist() == ["step10", "step100"]
    assert set(table.column("checkpoint_b").to_pylist()) == {"final"}
    out = run("compare", str(store), "--a", "layer=2", "--measure", "rsa", "--explain")
    assert out.returncode == 0
    assert out.stdout.startswith("Comparison: 9 pairs x 1 measure(s) (rsa)") and "cached: 0 of 9" in out.stdout


def test_compare_usage_errors_exit_2_naming_the_token(store):
    out = run("compare", str(store), "--a", "checkpoint=final,layer", "--measure", "linear_cka")
    assert out.returncode == 2 and "bad filter token 'layer'" in out.stderr and "Traceback" not in out.stderr
    out = run("compare", str(store), "--a", "colour=red")
    assert out.returncode == 2 and "unknown key 'colour'" in out.stderr
    out = run("compare", str(store), "--a", "layer=x:y")
    assert out.returncode == 2 and "whole numbers" in out.stderr
    out = run("compare", str(store), "--a", "layer=1", "--measure", "knn_overlap", "--param", "k=ten")
    assert out.returncode == 2 and "k='ten'" in out.stderr
    out = run("compare", str(store), "--a", "layer=1", "--measure", "linear_ckaa")
    assert out.returncode == 1 and "did you mean 'linear_cka'" in out.stderr


@pytest.mark.parametrize(("kind", "args"), [
    ("heatmap", ["--a", "checkpoint=final", "--b", "checkpoint=step10"]),
    ("trajectory", ["--a", "model=m", "--reference", "final"]),
    ("grid", ["--a", "model=m"]),
])
def test_plot_writes_images(store, tmp_path, kind, args):
    target = tmp_path / f"{kind}.png"
    out = run("plot", str(store), kind, *args, "-o", str(target))
    assert out.returncode == 0, out.stderr
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 15_000


def test_plot_svg_and_bad_suffix(store, tmp_path):
    out = run("plot", str(store), "heatmap", "--a", "checkpoint=final", "-o", str(tmp_path / "h.svg"))
    assert out.returncode == 0 and b"<svg" in (tmp_path / "h.svg").read_bytes()
    out = run("plot", str(store), "heatmap", "--a", "checkpoint=final", "-o", str(tmp_path / "h.jpg"))
    assert out.returncode == 2 and ".png or .svg" in out.stderr


def test_export_parquet_and_csv(store, tmp_path):
    out = run("export", str(store), "--to", str(tmp_path / "bi"))
    assert out.returncode == 0, out.stderr
    schema = json.loads((tmp_path / "bi" / "schema.json").read_text())
    assert set(schema["views"]) == {"dissimilarities", "reps", "models", "checkpoints"}
    assert pq.read_table(tmp_path / "bi" / "reps.parquet").num_rows == 12
    out = run("export", str(store), "--to", str(tmp_path / "csv"), "--format", "csv", "--view", "models")
    assert out.returncode == 0 and (tmp_path / "csv" / "models.csv").read_text().startswith('"model_id","model"')
    out = run("export", str(store), "--to", str(tmp_path / "x"), "--view", "secrets")
    assert out.returncode == 1 and "cannot export view" in out.stderr


def test_every_command_is_documented():
    """Each registered command appears as `actdb <command>` in the README or docs/interfaces.md."""
    import typer.main

    from actdb.cli import _load_optional_commands, app

    _load_optional_commands()
    names = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    text = "\n".join(p.read_text() for p in (ROOT / "README.md", ROOT / "docs" / "interfaces.md") if p.exists())
    missing = [n for n in names if not re.search(rf"\bactdb {re.escape(n)}\b", text)]
    assert not missing, f"commands not documented in README.md / docs/interfaces.md: {missing}"
