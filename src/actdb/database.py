"""``Database``: the one entry object. Store operations plus query and ingest verbs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actdb.store import Store, VerifyReport

if TYPE_CHECKING:
    from actdb.query.selection import Selection


class Database(Store):
    """An open actdb store. Create with :func:`actdb.open`.

    Everything a user needs is reachable from here: datasets, models, checkpoints and
    reps (:meth:`add_dataset`, :meth:`write_rep`, :meth:`read_rep`), ingest
    (:meth:`ingest`), lazy comparisons (:meth:`reps`) and SQL (:meth:`sql`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._attached: dict[str, Database] = {}

    # ------------------------------------------------------------------ queries
    def reps(self, **filters: Any) -> Selection:
        """A lazy selection of complete reps. Each filter (model, checkpoint, site, layer,
        step, dataset, pooling, tokenizer, family, architecture, width, depth, store) takes a
        value, a list, a glob (``"step*"``) or, for numbers, a slice/range
        (``layer=slice(2, 6)``). Nothing is read until the selection is iterated (catalog
        only) or a comparison of it is computed."""
        from actdb.query.selection import Selection

        return Selection.build(self, filters)

    def attach(self, path_or_url: str, *, name: str, catalog_url: str | None = None) -> Database:
        """Mount another store read-only under ``name``: ``db.reps(store=name, ...)``
        selects its reps, and they compare with local reps of the same texts."""
        from actdb.errors import AlreadyExists
        from actdb.store.parse import parse_name

        name = parse_name(name, "attached store")
        if name == "local" or name in self._attached:
            raise AlreadyExists(f"a store named {name!r} is already attached; choose another name")
        other = Database(path_or_url, catalog_url=catalog_url, read_only=True)
        self._attached[name] = other
        return other

    def store_handle(self, name: str = "local") -> Database:
        """This store (``"local"``) or an attached one, by name."""
        if name == "local":
            return self
        try:
            return self._attached[name]
        except KeyError:
            from actdb.errors import NotFound, close_matches

            raise NotFound(f"no attached store named {name!r}; {close_matches(name, self._attached)}. "
                           "Attach it with db.attach(path, name=...)") from None

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
        dissimilarities. No writes, no file or network access. ``dissim(measure, rep_a,
        rep_b)`` computes (and caches) a measure inside the query; all the calls of one
        statement are batched into one plan.
        """
        from actdb.query.sql import sql_with_dissim

        return sql_with_dissim(self, query, max_rows=max_rows, timeout=timeout)

    def ingest(self, model: Any, dataset: Any, **kwargs: Any) -> Any:
        """Run a transformers model over a dataset; see :func:`actdb.ingest.run`."""
        from actdb.ingest import run

        return run(self, model, dataset, **kwargs)


def open(path: str, *, catalog_url: str | None = None, read_only: bool = False,  # noqa: A001 - public name
         busy_timeout: float = 10.0, arrays_url: str | None = None,
         storage_options: dict[str, Any] | None = None) -> Database:
    """Open (or create) the store at ``path``.

    ``catalog_url``: a SQLAlchemy URL for the catalog (default: ``path/catalog.duckdb``),
    e.g. ``postgresql+psycopg://user@host/db`` for a shared catalog; it is remembered in
    the store. ``read_only``: open for reading while another process writes.
    ``busy_timeout``: seconds to retry while another process holds a DuckDB catalog
    before raising :class:`~actdb.errors.StoreBusy`. ``arrays_url``: when creating a
    store, keep its arrays on an object store (``s3://bucket/prefix``; remembered in the
    store); ``storage_options``: fsspec options for it (default: endpoint and credentials
    from the environment, e.g. ``AWS_ENDPOINT_URL``).
    """
    return Database(path, catalog_url=catalog_url, read_only=read_only, busy_timeout=busy_timeout,
                    arrays_url=arrays_url, storage_options=storage_options)
