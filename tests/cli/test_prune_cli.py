"""actdb rm / du / cache clear, run as a user runs them: a real `actdb` process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import actdb


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actdb", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "s"
    db = actdb.open(str(path))
    db.add_dataset("ds", [f"text {i}" for i in range(300)])
    rng = np.random.default_rng(1)
    for model in ("pythia", "gpt2"):
        for ckpt in ("step1", "final"):
            for layer in range(2):
                db.write_rep(model, ckpt, "ds", f"hidden.{layer}", rng.standard_normal((300, 4)).astype("float32"),
                             pooling="mean")
    db.reps().compare(measure="procrustes").compute()
    db.close()
    return path


def _state(path: Path) -> tuple[int, int, int]:
    db = actdb.open(str(path), read_only=True)
    try:
        return (db.sql("SELECT count(*) AS n FROM reps").column("n")[0].as_py(),
                db.sql("SELECT count(*) AS n FROM results").column("n")[0].as_py(),
                len(db.checkpoints()))
    finally:
        db.close()


def test_rm_shows_the_plan_and_deletes_only_with_yes(store: Path) -> None:
    before = _state(store)
    out = run("rm", str(store), "--model", "pythia", "--checkpoint", "step*")
    assert out.returncode == 0, out.stderr
    assert "reps to remove" in out.stdout and out.stdout.count("pythia") >= 2
    assert "would delete 2 rep(s)" in out.stdout and "checkpoint(s) pythia/step1" in out.stdout
    assert "nothing was deleted" in out.stdout and "--yes" in out.stdout
    assert _state(store) == before
    out = run("rm", str(store), "--model", "pythia", "--checkpoint", "step*", "--yes")
    assert out.returncode == 0, out.stderr
    assert "deleted 2 rep(s)" in out.stdout and "15 cached result(s)" in out.stdout
    assert _state(store) == (before[0] - 2, before[1] - 15, before[2] - 1)
    out = run("rm", str(store), "--model", "pythia", "--yes")
    assert out.returncode == 0 and "model(s) pythia" in out.stdout
    out = run("ls", str(store), "models", "--format", "json")
    assert [m["model"] for m in json.loads(out.stdout)] == ["gpt2"]
    out = run("verify", str(store))
    assert out.returncode == 0 and "clean" in out.stdout


def test_rm_without_a_filter_is_a_usage_error(store: Path) -> None:
    out = run("rm", str(store), "--yes")
    assert out.returncode == 2
    assert "at least one of --model" in out.stderr and "Traceback" not in out.stderr
    assert _state(store)[0] == 8


def test_rm_unknown_names_are_not_found_with_suggestions(store: Path) -> None:
    out = run("rm", str(store), "--model", "pythai", "--yes")
    assert out.returncode == 1
    assert out.stderr.strip() == f"actdb: error: no model matches 'pythai' in {store}; did you mean 'pythia'?"
    out = run("rm", str(store), "--rep", "12345")
    assert out.returncode == 1 and "no rep with id 12345" in out.stderr
    out = run("rm", str(store / "nope"), "--model", "x")
    assert out.returncode == 1 and "not an actdb store" in out.stderr and not (store / "nope").exists()
    assert _state(store)[0] == 8


def test_du_formats(store: Path) -> None:
    out = run("du", str(store))
    assert out.returncode == 0, out.stderr
    assert "disk usage" in out.stdout and "cache: moments" in out.stdout and "kB" in out.stdout
    rows = json.loads(run("du", str(store), "--by", "site", "--format", "json").stdout)
    arrays = [r for r in rows if r["what"] == "arrays"]
    assert len(arrays) == 8 and {r["site"] for r in arrays} == {"hidden.0", "hidden.1"}
    kinds = {r["what"]: r for r in rows}
    assert kinds["cache: results"]["count"] == 36 and kinds["cache: moments"]["count"] == 8
    csv = run("du", str(store), "--by", "model", "--format", "csv").stdout.splitlines()
    assert csv[0] == '"what","model","checkpoint","site","count","bytes"' and len(csv) == 1 + 2 + 4
    out = run("du", str(store), "--by", "layer")
    assert out.returncode == 2 and "choose one of model, checkpoint, site" in out.stderr


def test_cache_clear(store: Path) -> None:
    out = run("cache", "clear", str(store), "--measure", "procrustes")
    assert out.returncode == 0, out.stderr
    assert "cleared 36 cached result(s)" in out.stdout and "0 cached moment set(s)" in out.stdout
    out = run("cache", "clear", str(store))
    assert out.returncode == 0 and "cleared 0 cached result(s)" in out.stdout and "8 cached moment" in out.stdout
    rows = json.loads(run("du", str(store), "--format", "json").stdout)
    assert {r["what"]: r["count"] for r in rows}["cache: moments"] == 0
    out = run("cache", "clear", str(store), "--measure", "lin_cka")
    assert out.returncode == 1 and "unknown measure 'lin_cka'; did you mean 'linear_cka'" in out.stderr
