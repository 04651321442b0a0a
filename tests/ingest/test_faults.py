"""Fault and resource tests in child processes: SIGKILL mid-ingest then resume; bounded memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actdb

CHILD = Path(__file__).with_name("_child.py")
pytestmark = pytest.mark.slow


def _child(*args: Any, announce: bool = False) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(CHILD), *map(str, args)] + (["--announce-flushes"] if announce else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "error"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _stored(db: Any) -> dict[tuple[str, str], tuple[np.ndarray, str | None]]:
    out = {}
    for r in db.find_reps(model="m"):
        arr = db.read_rep(r)
        out[(r.site, r.pooling)] = (arr.read_stored(0, r.n_rows), r.checksum)
    return out


def test_sigkill_then_resume_is_byte_identical(tmp_path: Path, neox_sweep: Path) -> None:
    model = neox_sweep / "checkpoint-8"
    common = (240, "--chunk-bytes", 4096, "--sites", "hidden.*,**.mlp.act")
    killed_store, clean_store = tmp_path / "killed", tmp_path / "clean"

    proc = _child(killed_store, model, *common, announce=True)
    flushed: set[str] = set()
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("FLUSH"):
            flushed.add(line.split()[1])
        if len(flushed) == 5:  # every rep has flushed a shard: kill mid-way
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the child finished before it could be killed"

    db = actdb.open(str(killed_store))
    writing = db.find_reps(status="writing")
    progress = [db.rep_meta(r.id)["rows_written"] for r in writing]
    db.close()
    assert writing and max(progress) > 0, "the kill should land after some shards were flushed"

    resumed = _finish(_child(killed_store, model, *common))
    assert resumed["status"] == ["resumed"] and resumed["start"][0] > 0
    assert resumed["n_tokens"] < resumed["n_rows"]  # only the unflushed tail was recomputed
    clean = _finish(_child(clean_store, model, *common))
    assert clean["status"] == ["ingested"] and clean["start"] == [0]

    a, b = actdb.open(str(killed_store)), actdb.open(str(clean_store))
    got, want = _stored(a), _stored(b)
    assert set(got) == set(want) and len(got) == 5
    for key in want:
        assert got[key][1] == want[key][1], key  # checksums over the stored bits
        assert got[key][0].tobytes() == want[key][0].tobytes(), key
    report = a.verify()
    assert report.clean, report.problems
    assert a.find_reps(status="writing") == []
    again = _finish(_child(killed_store, model, *common))
    assert again["status"] == ["up-to-date"] and again["n_tokens"] == 0


def test_doubling_the_dataset_does_not_raise_peak_memory(tmp_path: Path, neox_sweep: Path,
                                                         corpus: list[str]) -> None:
    from tiny_models import make_sweep

    # Cheap to run, wide to store: 2 MLP activations of width 2048 per token.
    folder = make_sweep("gpt_neox", tmp_path / "wide", corpus[:64], steps=(1,), width=32, mlp=2048)
    model = folder / "checkpoint-1"
    opts = ("--chunk-bytes", 65536, "--max-length", 32, "--batch-size", 32, "--sites", "**.mlp.act")
    small = _finish(_child(tmp_path / "s1", model, 1000, *opts))
    large = _finish(_child(tmp_path / "s2", model, 2000, *opts))
    # what holding the extra activations would cost, even in stored float16
    extra_mib = (large["n_rows"] - small["n_rows"]) * 2048 * 2 * 2 / 2**20
    assert extra_mib > 0.10 * small["peak_rss_mib"], "the test must be able to see unbounded memory"
    assert large["peak_rss_mib"] <= small["peak_rss_mib"] * 1.05, (small, large, extra_mib)
