"""kill -9 during a schema migration (an old store upgraded on open / ``actdb migrate``):
DDL runs in one transaction, so the catalog is at the old or the new revision, never
between, and the next open finishes the upgrade."""

from __future__ import annotations

import pytest
from fault_harness import crash_trials, fill
from reliability_kit import catalog_dump

import actdb
from actdb.store import migrate

pytestmark = pytest.mark.slow


def test_kill_during_migrate(zygote, tmp_path):
    base = tmp_path / "base"
    with actdb.open(str(base)) as db:
        fill(db)
        migrate.downgrade(db.catalog.engine, "0001")
    with actdb.open(str(tmp_path / "probe")) as probe:  # (what an upgraded catalog holds)
        assert probe.schema_revision() == migrate.head_revision() != "0001"

    def outcome(store):  # type: ignore[no-untyped-def]
        with actdb.open(str(store), read_only=True) as db:
            assert db.schema_revision() == migrate.head_revision()
            return catalog_dump(db.catalog_url)

    figures = crash_trials(zygote, tmp_path, base, suite="migrate", command="migrate", args={},
                           kinds=["sql", "commit", "timer"], outcome=outcome)
    assert figures.trials >= 1
