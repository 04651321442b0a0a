"""Fixtures for query tests (data helpers live in query_data.py)."""

from __future__ import annotations

import pytest

import actdb
from actdb.store import arrays
from query_data import DIM, fill


@pytest.fixture
def qdb(tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 64 * DIM * 4)  # 64-row chunks: 9 chunks a rep
    db = actdb.open(str(tmp_path / "q"))
    values = fill(db)
    return db, values
