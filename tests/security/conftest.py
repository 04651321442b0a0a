"""Fixtures for the hostile-input suite (helpers live in ``security_kit``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import actdb

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
sys.path.insert(0, str(Path(__file__).parent))
from security_kit import Snapshot, populate


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[actdb.Database, Path]]:
    """A populated DuckDB store and a sibling 'outside' folder holding a secret file
    (what a file-reading query would try to steal) -- shared by a module's tests."""
    base = tmp_path_factory.mktemp("hostile")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("secret_column\nTOPSECRET-4711\n")
    db = actdb.open(str(base / "store"))
    populate(db)
    yield db, outside
    db.close()


@pytest.fixture
def unchanged(hostile_store: tuple[actdb.Database, Path]) -> Iterator[Callable[[], None]]:
    """Snapshot before the test; the test calls the returned function (and teardown
    calls it again) to assert nothing was written anywhere."""
    db, outside = hostile_store
    snap = Snapshot(db, outside)
    yield snap.assert_unchanged
    snap.assert_unchanged()
