"""The kill -9 harness: a zygote process (``_fault_child.py``) forks one child per run;
a clean run calibrates how many events (statements, commits, chunk writes, batches) a
command has, then each trial kills a child at a random one of them (or at a random time),
and the store is checked: verify is clean after repair, every rep complete before is
byte-identical, and re-running the command gives what a clean run gives.

Trials per suite: ``ACTDB_FAULT_TRIALS`` (3 by default, as in CI; 30 for the full run).
``ACTDB_FAULT_SEED`` picks the random kill points (default 0: CI is reproducible).
``ACTDB_RELIABILITY_REPORT=FILE`` appends one JSON line of figures per suite.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from reliability_kit import TRIALS, rep_bytes

import actdb

HERE = Path(__file__).parent
SEED = int(os.environ.get("ACTDB_FAULT_SEED", "0"))


class Zygote:
    """A long-lived process that has imported actdb (and torch) and forks on request."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        env = {**os.environ, "ACTDB_FAULT_TORCH": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "error",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "_fault_child.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        assert ready and json.loads(ready)["ready"], "the fault zygote did not start"

    def run(self, command: str, store: Path, args: dict[str, Any],
            kill: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        out = self.workdir / f"{uuid.uuid4().hex}.json"
        req = {"command": command, "store": str(store), "args": args, "kill": kill, "out": str(out)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the fault zygote died"
        return dict(json.loads(line))

    def ok(self, command: str, store: Path, args: dict[str, Any]) -> dict[str, Any]:
        reply = self.run(command, store, args)
        assert not reply["killed"] and reply["exitcode"] == 0, reply["error"]
        return dict(reply["result"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Figures:
    suite: str
    trials: int = 0
    killed: Counter[str] = field(default_factory=Counter)
    finished_first: int = 0
    repaired: Counter[str] = field(default_factory=Counter)

    def report(self) -> None:
        line = {"suite": self.suite, "trials": self.trials, "killed_at": dict(self.killed),
                "finished_before_timer": self.finished_first, "repairs": dict(self.repaired), "seed": SEED}
        print(json.dumps(line))
        path = os.environ.get("ACTDB_RELIABILITY_REPORT")
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps(line) + "\n")


def crash_trials(zygote: Zygote, tmp_path: Path, base: Path, *, suite: str, command: str, args: dict[str, Any],
                 kinds: list[str], outcome: Callable[[Path], Any], trials: int = TRIALS) -> Figures:
    """Run ``command`` on copies of the store ``base``: once cleanly, then ``trials``
    times killed (kill points cycle through ``kinds``), each followed by the checks."""
    rng = random.Random(f"{SEED}:{suite}")
    with actdb.open(str(base)) as db:
        before = rep_bytes(db)
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    calibration = zygote.ok(command, clean, args)
    expected = outcome(clean)
    counts, seconds = calibration["events"], calibration["seconds"]
    for kind in kinds:
        assert kind == "timer" or counts.get(kind, 0) > 0, f"a clean {command} has no {kind!r} events: {counts}"
    figures = Figures(suite)
    for i in range(trials):
        kind = kinds[i % len(kinds)]
        if kind == "timer":
            kill = {"kind": "timer", "after": rng.uniform(0.02, 0.95) * seconds}
        else:
            kill = {"kind": kind, "at": rng.randint(1, counts[kind])}
        where = f"trial {i} (seed {SEED}): kill -9 at {kill}"
        store = tmp_path / f"trial{i}"
        shutil.copytree(base, store)
        reply = zygote.run(command, store, args, kill=kill)
        if reply["killed"]:
            figures.killed[kind] += 1
        else:
            assert kind == "timer" and reply["exitcode"] == 0, f"{where}: {reply['error']}"
            figures.finished_first += 1
        resume_first = i % 2 == 1  # odd trials: re-run (resume) before repairing
        if resume_first:
            zygote.ok(command, store, args)
        with actdb.open(str(store)) as db:
            report = db.verify(repair=True)
            assert report.clean, f"{where}: not clean after repair: {report.problems}"
            for line in report.repaired:
                figures.repaired[line.split(" rep")[0].split(" array")[0]] += 1
            assert db.verify().clean, where
            after = rep_bytes(db)
        for rep_id, (checksum, data) in before.items():
            assert rep_id in after, f"{where}: rep {rep_id}, complete before the crash, is gone"
            assert after[rep_id][0] == checksum and after[rep_id][1] == data, f"{where}: rep {rep_id} changed"
        if not resume_first:
            zygote.ok(command, store, args)
        got = outcome(store)
        assert got == expected, f"{where}: the re-run differs from a clean run"
        with actdb.open(str(store)) as db:
            assert db.verify().clean, where
        figures.trials += 1
        shutil.rmtree(store)
    figures.report()
    return figures


N, DIM = 3000, 24


def fill(db: actdb.Database) -> None:
    db.add_dataset("d", [f"text {i}" for i in range(N)])
    rng = np.random.default_rng(0)
    base = rng.standard_normal((N, DIM))
    with db.session():
        for step in (1, 10, 100):
            h = base
            for layer in range(3):
                h = np.tanh(h @ (np.eye(DIM) + rng.standard_normal((DIM, DIM)) / np.sqrt(step * DIM)))
                db.write_rep("m", f"step{step}", "d", f"hidden.{layer}", h, pooling="mean", dtype="float32")
