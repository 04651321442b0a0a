"""Concurrent creates: writers racing to create the same model, checkpoint, dataset or
token table all succeed, and each name is stored exactly once (issue 15.5).

Real concurrency on real catalogs: several processes (a DuckDB file, where the file lock
lets one process in at a time and the others retry, and PostgreSQL, where they overlap),
and several threads of one process sharing a ``Database`` (for DuckDB, one database
instance with optimistic concurrency control). Before the fix, the loser of each race got
a raw ``sqlalchemy.exc.IntegrityError``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

import actdb

CHILD = Path(__file__).with_name("_race_child.py")
N_NAMES = 4


def _counts(db: actdb.Database) -> dict[str, list[tuple[object, ...]]]:
    """Per table, the names stored more than once (must be none) and the row counts."""
    with db.catalog.connect() as conn:
        def rows(q: str) -> list[tuple[object, ...]]:
            return [tuple(r) for r in conn.execute(sa.text(q)).all()]
        return {
            "models": rows("SELECT name, count(*) FROM model GROUP BY name ORDER BY name"),
            "checkpoints": rows("SELECT model_id, name, count(*) FROM checkpoint GROUP BY 1, 2 ORDER BY 1, 2"),
            "datasets": rows("SELECT name, count(*) FROM dataset GROUP BY name ORDER BY name"),
            "examples": rows("SELECT dataset_id, count(*) FROM example GROUP BY 1 ORDER BY 1"),
            "tokenizations": rows("SELECT dataset_id, count(*) FROM tokenization GROUP BY 1 ORDER BY 1"),
            "tokens": rows("SELECT tokenization_id, count(*) FROM token GROUP BY 1 ORDER BY 1"),
        }


def _check_once_each(db: actdb.Database) -> None:
    counts = _counts(db)
    for table in ("models", "checkpoints", "datasets", "tokenizations"):
        assert len(counts[table]) == N_NAMES, (table, counts[table])
        assert all(r[-1] == 1 for r in counts[table]), (table, counts[table])
    assert [r[1] for r in counts["examples"]] == [5] * N_NAMES  # the winner's examples, once
    assert [r[1] for r in counts["tokens"]] == [5] * N_NAMES
    assert [(m.name, m.depth) for m in db.models()] == [(f"m{k}", k) for k in range(N_NAMES)]
    assert sorted((c.model, c.step) for c in db.checkpoints()) == [(f"m{k}", k) for k in range(N_NAMES)]


def _run_children(store: Path, url: str | None, n: int, tmp: Path) -> list[dict[str, str]]:
    env = {**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"}
    start_at = time.time() + 6.0  # every child imported and opened by then: they start together
    outs = [tmp / f"race{i}.json" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, str(CHILD), str(store), url or "-", str(start_at), str(N_NAMES),
                               str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for out in outs]
    stderrs = [proc.communicate(timeout=300)[1] for proc in procs]
    errors: list[dict[str, str]] = []
    for proc, out, stderr in zip(procs, outs, stderrs):
        assert proc.returncode == 0, stderr[-3000:]
        errors += json.loads(out.read_text())
    return errors


@pytest.mark.parametrize("backend", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_processes_creating_the_same_names_all_succeed(tmp_path: Path, backend: str,
                                                       request: pytest.FixtureRequest) -> None:
    url = None if backend == "duckdb" else str(request.getfixturevalue("pg_url"))
    store = tmp_path / "store"
    actdb.open(str(store), catalog_url=url).close()  # created (and migrated) once, beforehand
    errors = _run_children(store, url, 3, tmp_path)
    assert not errors, "\n".join(f"{e['what']}: {e['type']}: {e['message']}\n{e['traceback']}" for e in errors[:3])
    with actdb.open(str(store), catalog_url=url, read_only=True) as db:
        _check_once_each(db)


@pytest.mark.parametrize("backend", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_threads_creating_the_same_names_all_succeed(tmp_path: Path, backend: str,
                                                     request: pytest.FixtureRequest) -> None:
    sys.path.insert(0, str(CHILD.parent))
    try:
        from _race_child import hammer
    finally:
        sys.path.remove(str(CHILD.parent))
    url = None if backend == "duckdb" else str(request.getfixturevalue("pg_url"))
    db = actdb.open(str(tmp_path / "store"), catalog_url=url)
    barrier = threading.Barrier(6)
    errors: list[dict[str, str]] = []

    def work() -> None:
        barrier.wait()
        errors.extend(hammer(db, N_NAMES))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(timeout=300)
        assert not errors, "\n".join(f"{e['what']}: {e['type']}: {e['message']}\n{e['traceback']}"
                                     for e in errors[:3])
        _check_once_each(db)
    finally:
        db.close()


@pytest.mark.postgres
def test_processes_opening_a_fresh_postgres_catalog_at_once(tmp_path: Path, pg_url: str) -> None:
    """Each process creates its own store folder on one new, empty PostgreSQL catalog: the
    schema is created (migrated) once, by whichever gets there first, and every create
    afterwards is race-safe."""
    store_dirs = [tmp_path / f"user{i}" for i in range(3)]
    env = {**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"}
    start_at = time.time() + 5.0
    outs = [tmp_path / f"fresh{i}.json" for i in range(len(store_dirs))]
    procs = [subprocess.Popen([sys.executable, str(CHILD), str(d), pg_url, str(start_at), "2", str(out), "--open-late"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d, out in zip(store_dirs, outs)]
    stderrs = [proc.communicate(timeout=300)[1] for proc in procs]
    for proc, out, stderr in zip(procs, outs, stderrs):
        assert proc.returncode == 0, stderr[-3000:]
        assert json.loads(out.read_text()) == []
    with actdb.open(str(store_dirs[0]), catalog_url=pg_url, read_only=True) as db:
        assert [m.name for m in db.models()] == ["m0", "m1"]
        assert [d.name for d in db.datasets()] == ["d0", "d1"]
