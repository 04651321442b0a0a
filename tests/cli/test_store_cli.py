"""The store commands, run as a user runs them: a real `actdb` process."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import actdb
from actdb.store.migrate import head_revision


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actdb", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s"
    db = actdb.open(str(path))
    db.add_dataset("d", ["a b", "c d e"])
    db.write_rep("m", "final", "d", "hidden.1", np.ones((2, 3)), pooling="mean")
    db.add_checkpoint("m", "early", step=10, weights_hash="sha256:x")
    db.add_checkpoint("m", "early-copy", step=20, weights_hash="sha256:x")
    db.close()
    return path


def test_init_and_ls(tmp_path):
    out = run("init", str(tmp_path / "new"))
    assert out.returncode == 0 and f"schema {head_revision()}" in out.stdout
    out = run("ls", str(tmp_path / "new"), "models", "--format", "json")
    assert out.returncode == 0 and json.loads(out.stdout) == []


def test_ls_formats(store):
    out = run("ls", str(store), "reps", "--format", "csv")
    assert out.returncode == 0
    header, row = out.stdout.strip().splitlines()
    assert header.startswith('"rep_id","model","checkpoint"') and '"hidden.1"' in row
    out = run("ls", str(store), "checkpoints")
    assert "early-copy has the same weights as m/early" in out.stdout


def test_sql_json_and_read_only(store):
    out = run("sql", str(store), "SELECT model, count(*) AS n FROM reps GROUP BY model", "-f", "json")
    assert json.loads(out.stdout) == [{"model": "m", "n": 1}]
    out = run("sql", str(store), "DELETE FROM rep")
    assert out.returncode == 1 and "only SELECT" in out.stderr and "Traceback" not in out.stderr
    out = run("sql", str(store), "SELECT * FROM read_csv('/etc/passwd')")
    assert out.returncode == 1 and "not allowed" in out.stderr


def test_exit_codes(store, tmp_path):
    out = run("ls", str(store), "bogus")
    assert out.returncode == 2 and "choose one of" in out.stderr
    out = run("ls", str(tmp_path / "nowhere"))
    assert out.returncode == 1 and "actdb init" in out.stderr and "Traceback" not in out.stderr
    out = run("verify")
    assert out.returncode == 2  # usage: missing STORE


def test_verify_and_migrate(store):
    out = run("verify", str(store))
    assert out.returncode == 0 and "checked 1 reps: clean" in out.stdout
    (store / "arrays" / "reps" / "000000777").mkdir()
    out = run("verify", str(store))
    assert out.returncode == 1 and "orphan" in out.stdout
    out = run("verify", str(store), "--repair")
    assert out.returncode == 0 and "removed orphan" in out.stdout
    out = run("migrate", str(store))
    assert out.returncode == 0 and f"schema at {head_revision()}" in out.stdout


def test_every_command_has_help_with_an_example():
    import typer.main

    from actdb.cli import _load_optional_commands, app

    _load_optional_commands()
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert re.search(r"Examples?:", command.help or ""), f"`actdb {name} --help` lacks an example"
