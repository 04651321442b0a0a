"""The README's quickstart runs as written (Python block and SQL examples)."""

from __future__ import annotations

import os
import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = blocks("python")[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # our own README
    df = scope["df"]
    assert len(df) == 6 and set(df.measure) == {"linear_cka", "procrustes"}
    assert (df.checkpoint_b == "step1000").all()


def test_sql_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks("python")[0], "README.md", "exec"), {})
    import actdb

    db = actdb.open(str(tmp_path / "mystore"))
    statements = [s.strip() for s in blocks("sql")[0].split(";") if s.strip()]
    assert len(statements) == 3
    trajectory = db.sql(statements[0]).to_pylist()
    assert len(trajectory) == 6 and all(r["cka"] is not None for r in trajectory)
    heat = db.sql(statements[1]).to_pylist()
    assert len(heat) == 9
    db.sql(statements[2])
    assert os.path.isdir(tmp_path / "mystore" / "arrays")
