"""Attachments that last: `actdb attach/detach`, `actdb ls STORE stores`, honoured by
`actdb.open`, the CLI and the HTTP server; a moved store gives an error naming the fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _query_data import query_data

import actdb
from actdb.errors import AlreadyExists, NotAStore, NotFound, ReadOnly
from actdb.query.measures import linear_cka


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actdb", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


@pytest.fixture
def stores(tmp_path):  # type: ignore[no-untyped-def]
    """Two projects side by side: work/mine (model m) and teamb/store (model other, same texts)."""
    q = query_data()
    mine, theirs = tmp_path / "work" / "mine", tmp_path / "teamb" / "store"
    db = actdb.open(str(mine))
    q.fill(db)
    db.close()
    other = actdb.open(str(theirs))
    q.fill(other, model="other", seed=5)
    other.close()
    return mine, theirs


def test_cli_attach_persists_for_every_face(stores, tmp_path):
    mine, theirs = stores
    # relative to the current directory, as a user types it
    out = run("attach", "mine", "../teamb/store", "--name", "teamb", cwd=mine.parent)
    assert out.returncode == 0, out.stderr
    marker = json.loads((mine / "actdb.json").read_text())
    assert marker["attached"] == {"teamb": {"path": "../../teamb/store"}}  # relative to the store
    assert "catalog_url" in marker  # the store's own configuration is kept
    # CLI: compare against the attached store (the failing command)
    out = run("compare", str(mine), "--a", "model=m,checkpoint=final,layer=1", "--b",
              "store=teamb,model=other,checkpoint=final,layer=1", "-f", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 1 and rows[0]["store_b"] == "teamb" and rows[0]["model_b"] == "other"
    q = query_data()
    want = linear_cka(q.make_values(0)[("final", 1)].astype(np.float64),
                      q.make_values(5)[("final", 1)].astype(np.float64))
    assert rows[0]["value"] == pytest.approx(want, rel=1e-9)
    # ls stores
    out = run("ls", str(mine), "stores", "-f", "json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert listed == [{"name": "teamb", "path": "../../teamb/store", "resolved": str(theirs.resolve()),
                       "status": "ok"}]
    # Python: actdb.open re-attaches it, read-only
    db = actdb.open(str(mine))
    assert {r.model for r in db.reps(store="teamb")} == {"other"}
    assert db.store_handle("teamb").read_only
    db.close()
    # HTTP: the server's store has it too
    from fastapi.testclient import TestClient

    from actdb.api import create_app

    with TestClient(create_app(mine)) as client:
        res = client.post("/v1/compare", json={"a": "model=m,checkpoint=final,layer=1",
                                               "b": "store=teamb,model=other,checkpoint=final,layer=1"})
        assert res.status_code == 200, res.text
        assert res.json()["rows"][0]["value"] == pytest.approx(want, rel=1e-9)
    # moving both projects together keeps the relative attachment working
    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "work"), str(moved / "work"))
    shutil.move(str(tmp_path / "teamb"), str(moved / "teamb"))
    db = actdb.open(str(moved / "work" / "mine"))
    assert len(db.reps(store="teamb")) == 12
    db.close()
    # detach
    out = run("detach", str(moved / "work" / "mine"), "teamb")
    assert out.returncode == 0, out.stderr
    assert "attached" not in json.loads((moved / "work" / "mine" / "actdb.json").read_text())
    out = run("compare", str(moved / "work" / "mine"), "--a", "layer=1", "--b", "store=teamb")
    assert out.returncode == 1 and "no attached store named 'teamb'" in out.stderr
    assert "actdb attach" in out.stderr and "Traceback" not in out.stderr


def test_moved_attachment_names_path_and_fix(stores, tmp_path):
    mine, theirs = stores
    db = actdb.open(str(mine))
    db.attach(theirs, name="teamb", persist=True)
    db.close()
    shutil.move(str(theirs), str(tmp_path / "teamb" / "moved"))
    db = actdb.open(str(mine))  # the store still opens
    assert db.attachments()[0]["ok"] is False
    with pytest.raises(NotAStore) as err:
        db.reps(store="teamb").resolve()
    message = str(err.value)
    assert str(theirs.resolve()) in message and f"actdb detach {mine.resolve()} teamb" in message
    assert "actdb attach" in message
    db.close()
    out = run("ls", str(mine), "stores", "-f", "csv")
    assert out.returncode == 0 and "missing" in out.stdout
    out = run("compare", str(mine), "--a", "layer=1", "--b", "store=teamb")
    assert out.returncode == 1 and "is no longer at" in out.stderr and "actdb detach" in out.stderr


def test_python_attach_is_process_local_unless_persisted(stores):
    mine, theirs = stores
    db = actdb.open(str(mine))
    db.attach(str(theirs), name="tmp")  # as before: this Database only
    assert len(db.reps(store="tmp")) == 12
    assert "attached" not in json.loads((mine / "actdb.json").read_text())
    with pytest.raises(AlreadyExists, match="already attached"):
        db.attach(str(theirs), name="tmp")
    db.close()
    db = actdb.open(str(mine))
    with pytest.raises(NotFound, match="no attached store named 'tmp'"):
        db.reps(store="tmp").resolve()
    with pytest.raises(NotAStore, match="not an actdb store"):
        db.attach(str(mine.parent), name="nothing", persist=True)
    db.close()
    ro = actdb.open(str(mine), read_only=True)
    with pytest.raises(ReadOnly, match="open it for writing"):
        ro.attach(str(theirs), name="teamb", persist=True)
    ro.close()


def test_cli_attach_errors(stores):
    mine, theirs = stores
    out = run("attach", str(mine), str(mine.parent / "nope"), "--name", "x")
    assert out.returncode == 1 and "not an actdb store" in out.stderr and "Traceback" not in out.stderr
    out = run("detach", str(mine), "teamb")
    assert out.returncode == 1 and "no attached store named 'teamb'" in out.stderr
    assert run("attach", str(mine), str(theirs), "--name", "teamb").returncode == 0
    out = run("attach", str(mine), str(theirs), "--name", "teamb")
    assert out.returncode == 1 and "already attached" in out.stderr
