"""``Database``: the one entry object. Store operations plus query and ingest verbs."""

from __future__ import annotations

from typing import Any

from actdb.store import Store, VerifyReport


class Database(Store):
    """An open actdb store. Create with :func:`actdb.open`.

    Everything a user needs is reachable from here: datasets, models, checkpoints and
    reps (:meth:`add_dataset`, :meth:`write_rep`, :meth:`read_rep`), ingest
    (:meth:`ingest`), lazy comparisons (:meth:`reps`) and SQL (:meth:`sql`).
    """

    def session(self) -> Any:
        """``with db.session():`` holds one catalog connection across many writes
        (saves ~15 ms a write on DuckDB; keep it short, other processes wait)."""
        return self.catalog.session()

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Check every complete rep's array and checksum; ``repair`` removes leftovers
        of crashed writes and orphan arrays and quarantines corrupt reps."""
        from actdb.store.verify import verify

        return verify(self, repair=repair)

    def migrate(self) -> str:
        """Upgrade the catalog to this actdb's schema head (opening does it too)."""
        from actdb.store import migrate

        migrate.upgrade(self.catalog.engine)
        return migrate.head_revision()

    def sql(self, query: str, *, max_rows: int | None = 1_000_000, timeout: float | None = None) -> Any:
        """Run one read-only SELECT over the catalog views; returns a pyarrow Table.

        Views: models, checkpoints, datasets, examples, tokens, reps, results,
        dissimilarities. No writes, no file or network access.
        """
        from actdb.query.sql import run_sql

        return run_sql(self, query, max_rows=max_rows, timeout=timeout)

    def ingest(self, model: Any, dataset: Any, **kwargs: Any) -> Any:
        """Run a transformers model over a dataset; see :func:`actdb.ingest.run`."""
        from actdb.ingest import run

        return run(self, model, dataset, **kwargs)


def open(path: str, *, catalog_url: str | None = None, read_only: bool = False,  # noqa: A001 - public name
         busy_timeout: float = 10.0) -> Database:
    """Open (or create) the store at ``path``.

    ``catalog_url``: a SQLAlchemy URL for the catalog (default: ``path/catalog.duckdb``),
    e.g. ``postgresql+psycopg://user@host/db`` for a shared catalog; it is remembered in
    the store. ``read_only``: open for reading while another process writes.
    """
    return Database(path, catalog_url=catalog_url, read_only=read_only, busy_timeout=busy_timeout)
