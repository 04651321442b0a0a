"""Schema migrations: run the Alembic revisions shipped in ``actdb.migrations``.

The revisions live in ``migrations/`` at the repository root and are installed as the
package ``actdb.migrations``, so a store upgrades from an installed wheel too.
"""

from __future__ import annotations

from importlib.resources import files

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from actdb.errors import StoreTooNew

_DUCKDB_REGISTERED = False


def register_duckdb() -> None:
    """Teach Alembic the DuckDB dialect (it takes PostgreSQL-style DDL). Done on first
    use rather than at import, so importing actdb patches nothing."""
    global _DUCKDB_REGISTERED
    if _DUCKDB_REGISTERED:
        return
    from alembic.ddl.impl import DefaultImpl

    class AlembicDuckDBImpl(DefaultImpl):
        __dialect__ = "duckdb"
        transactional_ddl = True

    _DUCKDB_REGISTERED = True


def _config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("actdb.migrations")))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest schema revision this actdb knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None  # the package always ships revisions
    return head


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def current_revision(connection: sa.Connection) -> str | None:
    """The store's revision, or None for an empty catalog."""
    register_duckdb()
    return MigrationContext.configure(connection).get_current_revision()


def check_revision(revision: str | None, where: str) -> None:
    """Refuse a catalog written by a newer actdb (a revision we do not ship)."""
    if revision is not None and revision not in known_revisions():
        raise StoreTooNew(
            f"the catalog of {where} is at schema revision {revision!r}, which this actdb "
            f"(schema head {head_revision()!r}) does not know: it was written by a newer "
            "actdb. Upgrade actdb (pip install -U actdb) to open it."
        )


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    register_duckdb()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several processes opening one fresh catalog at once: the first migrates, the others
            # wait here (a lock per schema, held until commit) and then find nothing to do.
            # DuckDB needs none: its file lock lets one writing process in at a time.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(current_schema()), 1936)")
        command.upgrade(_config(conn), revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    register_duckdb()
    with engine.begin() as conn:
        command.downgrade(_config(conn), revision)
