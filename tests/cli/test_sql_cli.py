"""`actdb sql` as a user runs it (a real process): dissim() values are cached as from Python
and HTTP, any value prints safely in the table, nested columns render in CSV, and bad SQL
is a one-line error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import actdb


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actdb", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s"
    db = actdb.open(str(path))
    db.add_dataset("d", ["a b", "c d e", "f g", "h i"], labels=["[bold]", "[/x]", "x", "y"])
    rng = np.random.default_rng(1)
    for layer in range(2):
        db.write_rep("m", "final", "d", f"hidden.{layer}", rng.normal(size=(4, 3)), pooling="mean")
    db.close()
    return path


def test_cli_sql_caches_dissim_values(store):
    query = "SELECT a.layer, b.layer, dissim('linear_cka', a.rep_id, b.rep_id) AS v FROM reps a, reps b"
    out = run("sql", str(store), query, "-f", "json")
    assert out.returncode == 0, out.stderr
    out = run("sql", str(store), "SELECT count(*) AS n FROM dissimilarities", "-f", "json")
    assert out.returncode == 0 and out.stdout.strip().startswith("[") and '"n": 3' in out.stdout, out


def test_table_printer_prints_markup_like_and_binary_values(store):
    out = run("sql", str(store), "SELECT label, '[/x]' AS t, CAST('ab' AS BLOB) AS b FROM examples ORDER BY example")
    assert out.returncode == 0, out.stderr
    assert "[bold]" in out.stdout and "[/x]" in out.stdout and "2 bytes: 6162" in out.stdout


def test_csv_renders_list_columns_as_json(store):
    out = run("sql", str(store), "SELECT [1, 2] AS l, map([1], ['a']) AS m", "-f", "csv")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1] == '"[1, 2]","{""1"": ""a""}"'


@pytest.mark.parametrize("query, message", [
    ("SELECT " + "(" * 5000 + "1" + ")" * 5000, "nests parentheses"),
    ("SELECT * FROM rep_moments LIMIT 1", "not allowed"),
    ("SELECT 'infinity'::DATE AS d", "outside the years"),
])
def test_bad_sql_is_one_line(store, query, message):
    out = run("sql", str(store), query)
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
