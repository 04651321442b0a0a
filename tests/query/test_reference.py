"""The default reference checkpoint, face-worded errors, trajectory reference points, and
read_rep on the handles db.reps() yields."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from query_data import N_EX

import actdb
from actdb.errors import InvalidInput


def _sweep(path, names_steps):  # type: ignore[no-untyped-def]
    db = actdb.open(str(path))
    db.add_dataset("d", [f"text {i}" for i in range(N_EX)])
    rng = np.random.default_rng(0)
    base = rng.standard_normal((N_EX, 8))
    for name, step in names_steps:
        db.add_checkpoint("m", name, step=step)
        for layer in range(2):
            db.write_rep("m", name, "d", f"hidden.{layer}", base + 0.1 * (step or 0) * rng.standard_normal((N_EX, 8)),
                         pooling="mean", dtype="float32")
    return db


def test_default_reference_is_the_highest_step(tmp_path):
    db = _sweep(tmp_path / "s", [("step0", 0), ("step20", 20), ("step5", 5)])
    rows = db.reps().compare(pairs="to_reference").compute().rows
    assert {r["checkpoint_b"] for r in rows} == {"step20"}
    assert sorted((r["checkpoint_a"], r["site_a"]) for r in rows) == [
        ("step0", "hidden.0"), ("step0", "hidden.1"), ("step5", "hidden.0"), ("step5", "hidden.1")]
    assert "reference=final, else the highest step" in db.reps().compare(pairs="to_reference").explain(show=False)
    # the reference's own point, for trajectories: itself, similarity 1
    with_self = db.reps().compare(pairs="to_reference", include_reference=True).compute().rows
    own = [r for r in with_self if r["checkpoint_a"] == "step20"]
    assert len(with_self) == 6 and len(own) == 2 and all(r["value"] == pytest.approx(1.0) for r in own)
    # a checkpoint named final wins over any step
    db.add_checkpoint("m", "final", step=10)
    db.write_rep("m", "final", "d", "hidden.0", np.ones((N_EX, 8)) + np.eye(N_EX, 8), pooling="mean")
    assert {b.checkpoint for _, b in db.reps().compare(pairs="to_reference").pair_list()} == {"final"}


def test_no_reference_errors_name_the_face(tmp_path):
    db = _sweep(tmp_path / "s", [("a", None), ("b", None)])
    with pytest.raises(InvalidInput, match=r"no default reference.*reference='NAME'") as err:
        db.reps().compare(pairs="to_reference").pair_list()
    assert "--reference" in err.value.for_face("cli")  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match=r"no reps at reference checkpoint 'z'.*reference='NAME'"):
        db.reps().compare(pairs="to_reference", reference="z").pair_list()
    db.close()
    out = subprocess.run([sys.executable, "-m", "actdb", "plot", str(tmp_path / "s"), "trajectory", "--a", "model=m",
                          "-o", str(tmp_path / "t.png")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "--reference NAME" in out.stderr and "reference='" not in out.stderr


def test_cli_trajectory_defaults_to_last_step_and_draws_it(tmp_path, monkeypatch):
    from actdb import plots

    db = _sweep(tmp_path / "s", [("step1", 1), ("step10", 10), ("step100", 100)])
    db.close()
    out = subprocess.run([sys.executable, "-m", "actdb", "plot", str(tmp_path / "s"), "trajectory", "--a", "model=m",
                          "-o", str(tmp_path / "t.png")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # what the CLI plots: the same plan, in process, with the reference's own point
    seen = {}
    monkeypatch.setattr(plots, "save", lambda fig, path: seen.setdefault("fig", fig))
    from actdb.cli import main

    with pytest.raises(SystemExit) as done:
        main(["plot", str(tmp_path / "s"), "trajectory", "--a", "model=m", "-o", str(tmp_path / "u.png")])
    assert done.value.code == 0
    ax = seen["fig"].axes[0]
    xs = sorted({float(x) for line in ax.get_lines() for x in line.get_xdata()})
    assert xs == [1.0, 10.0, 100.0]  # the reference (step100) is on the plot
    ys = [float(y) for line in ax.get_lines() for x, y in zip(line.get_xdata(), line.get_ydata()) if x == 100]
    assert ys and all(y == pytest.approx(1.0) for y in ys)


def test_read_rep_accepts_handles_and_ids(tmp_path, qdb):
    db, values = qdb
    rep = next(iter(db.reps(checkpoint="final", layer=2)))
    arr = db.read_rep(rep)  # the handle db.reps() yields (was a raw TypeError)
    np.testing.assert_array_equal(arr[:], values[("final", 2)])
    np.testing.assert_array_equal(db.read_rep(rep.rep_id)[:], values[("final", 2)])
    np.testing.assert_array_equal(db.read_rep(np.int64(rep.rep_id))[:], values[("final", 2)])
    with pytest.raises(InvalidInput, match="read_rep takes a rep id"):
        db.read_rep("hidden.2")
    with pytest.raises(InvalidInput, match="read_rep takes a rep id"):
        db.read_rep(True)
    # a rep of an attached store is read from that store
    other = _sweep(tmp_path / "teamb", [("final", 1)])
    want = other.read_rep(next(iter(other.reps(site="hidden.1"))).rep_id)[:]
    other.close()
    db.attach(str(tmp_path / "teamb"), name="teamb")
    got = db.read_rep(next(iter(db.reps(store="teamb", site="hidden.1"))))[:]
    np.testing.assert_array_equal(got, want)
