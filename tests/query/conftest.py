"""Fixtures for query tests (data helpers live in query_data.py)."""

from __future__ import annotations

import pytest
from query_data import DIM, fill

import actdb
from actdb.store import arrays


@pytest.fixture
def qdb(tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 64 * DIM * 4)  # 64-row chunks: 9 chunks a rep
    db = actdb.open(str(tmp_path / "q"))
    values = fill(db)
    return db, values


@pytest.fixture
def reads(monkeypatch):
    """Counts every decoded chunk: (rep path, chunk index) -> times read."""
    counts: dict[tuple[str, int], int] = {}
    original = arrays.RepArray.read_stored

    def counting(self, start, stop):
        start, stop = max(0, start), min(stop, self.shape[0])
        for c in range(start // self.chunk_rows, (stop - 1) // self.chunk_rows + 1 if stop > start else 0):
            counts[(self.path, c)] = counts.get((self.path, c), 0) + 1
        return original(self, start, stop)

    monkeypatch.setattr(arrays.RepArray, "read_stored", counting)
    return counts
