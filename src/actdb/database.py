"""``Database``: the one entry object. Store operations plus query and ingest verbs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actdb.errors import InvalidInput
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
        from actdb import attachments

        self._attached: dict[str, Database] = {}  # opened attachments, by name
        # the store's configured attachments (actdb.json), opened lazily on first use
        self._attachments: dict[str, attachments.Attachment] = attachments.load(self.path)

    # ------------------------------------------------------------------ queries
    def reps(self, **filters: Any) -> Selection:
        """A lazy selection of complete reps. Each filter (model, checkpoint, site, layer,
        step, dataset, pooling, tokenizer, family, architecture, width, depth, store) takes a
        value, a list, a glob (``"step*"``) or, for numbers, a slice/range
        (``layer=slice(2, 6)``). Nothing is read until the selection is iterated (catalog
        only) or a comparison of it is computed."""
        from actdb.query.selection import Selection

        return Selection.build(self, filters)

    def rep(self, rep_id: int | None = None, /, **filters: Any) -> Any:
        """One complete rep by name: ``db.rep(model="m", checkpoint="final", site="hidden.3")``
        (any filters of :meth:`reps`; typically model, checkpoint, site, dataset, pooling)
        -> a :class:`~actdb.query.handle.RepHandle` with ``to_numpy``, ``to_torch``,
        ``tokens``, ``by_example``, ``to_xarray``. Exactly one rep must match:
        :class:`~actdb.errors.NotFound` (with the close names) when none does,
        :class:`~actdb.errors.InvalidInput` listing them when several do.

        ``db.rep(rep_id)`` (a positional id) is the catalog record
        (:class:`~actdb.store.records.RepInfo`, any status) as before; for a handle by id use
        ``db.rep(rep_id=N)``.
        """
        if rep_id is not None:
            if filters:
                raise InvalidInput("db.rep() takes a positional rep id or filters, not both; "
                                   f"use db.rep(rep_id={rep_id!r}, ...) to filter by id")
            return super().rep(rep_id)
        if not filters:
            raise InvalidInput("db.rep() needs filters naming one rep, e.g. db.rep(model='m', checkpoint='final', "
                               "site='hidden.3'), or a rep id")
        return self.reps(**filters).one()

    def attach(self, path_or_url: str | os.PathLike[str], *, name: str, catalog_url: str | None = None,
               persist: bool = False) -> Database:
        """Mount another store read-only under ``name``: ``db.reps(store=name, ...)``
        selects its reps, and they compare with local reps of the same texts.

        By default the attachment lasts as long as this ``Database`` object. With
        ``persist=True`` it becomes part of this store's configuration (``actdb.json``;
        the same as ``actdb attach STORE PATH --name NAME``): every later ``actdb.open``,
        CLI command and ``actdb serve`` of this store attaches it again. A relative path
        is recorded relative to this store. Persisting needs the store open for writing.
        """
        from actdb import attachments
        from actdb.errors import AlreadyExists, NotAStore, ReadOnly
        from actdb.store.parse import parse_name

        name = parse_name(name, "attached store")
        if name == "local" or name in self._attached or name in self._attachments:
            raise AlreadyExists(f"a store named {name!r} is already attached to {self.path}; choose another "
                                f"name{' (or detach it first)' if name != 'local' else ''}")
        if persist and self.read_only:
            raise ReadOnly(f"{self.path} is open read-only: open it for writing to change its attachments")
        text = os.fspath(path_or_url)
        if "://" in text:
            recorded, resolved = text, Path(text)
        else:
            resolved = Path(text).expanduser().resolve()
            if resolved == self.path:
                raise InvalidInput(f"cannot attach store {self.path} to itself")
            recorded = attachments.recorded_path(self.path, resolved) if persist else str(resolved)
            if not (resolved / attachments.MARKER).is_file():
                raise NotAStore(f"cannot attach {text!r}: {resolved} is not an actdb store (no "
                                f"{attachments.MARKER} in it); give the path of the other project's store")
        other = Database(text if "://" in text else resolved, catalog_url=catalog_url, read_only=True)
        att = attachments.Attachment(name, recorded, resolved, catalog_url, persisted=persist)
        if persist:
            attachments.save(self.path, att)
        self._attachments[name] = att
        self._attached[name] = other
        return other

    def detach(self, name: str) -> None:
        """Unmount an attached store; when it is part of this store's configuration, remove it
        there too (needs the store open for writing)."""
        from actdb import attachments
        from actdb.errors import NotFound, ReadOnly, close_matches

        att = self._attachments.get(name)
        if att is None:
            raise NotFound(f"no attached store named {name!r} in {self.path}; "
                           f"{close_matches(str(name), self._attachments)}")
        if att.persisted:
            if self.read_only:
                raise ReadOnly(f"{self.path} is open read-only: open it for writing to change its attachments")
            attachments.remove(self.path, name)
        del self._attachments[name]
        other = self._attached.pop(name, None)
        if other is not None:
            other.close()

    def attachments(self) -> list[dict[str, Any]]:
        """The attached stores: name, path as recorded, resolved path, whether it is persisted
        in this store's configuration, and whether a store is there (``ok``)."""
        return [{"name": a.name, "path": a.path, "resolved": str(a.resolved), "catalog_url": a.catalog_url,
                 "persisted": a.persisted, "ok": a.exists} for a in self._attachments.values()]

    def store_handle(self, name: str = "local") -> Database:
        """This store (``"local"``) or an attached one, by name (opened read-only on first use)."""
        if name == "local":
            return self
        if name in self._attached:
            return self._attached[name]
        from actdb import attachments
        from actdb.errors import NotAStore, NotFound, close_matches

        att = self._attachments.get(name)
        if att is None:
            raise NotFound(f"no attached store named {name!r}; {close_matches(name, self._attachments)}. "
                           f"Attach it with `actdb attach {self.path} PATH --name {name}` "
                           f"(Python: db.attach(path, name={name!r}))") from None
        if not att.exists:
            raise NotAStore(attachments.moved_message(self.path, att))
        other = Database(att.path if "://" in att.path else att.resolved, catalog_url=att.catalog_url,
                         read_only=True)
        self._attached[name] = other
        return other

    def read_rep(self, rep: Any) -> Any:
        """A lazy handle on a complete rep's array (row slices read only their chunks).

        ``rep``: a rep id (int), a rep handle as ``db.rep(...)`` returns and ``db.reps()``
        yields it (or its ``Rep`` record; also from an attached store), or a ``RepInfo``. Row ``i`` of a token-level rep is row ``i`` of
        its token table, in (example, position) order, padding dropped; row ``i`` of a
        pooled rep (mean/first/last) is example ``i`` of the dataset.
        """
        import numbers

        from actdb.store.records import RepInfo

        if isinstance(rep, RepInfo):
            return super().read_rep(rep)
        rep_id = getattr(rep, "rep_id", None)
        if rep_id is not None and isinstance(getattr(rep, "store", None), str):
            return Store.read_rep(self.store_handle(rep.store), int(rep_id))
        if isinstance(rep, numbers.Integral) and not isinstance(rep, bool):
            return super().read_rep(int(rep))
        raise InvalidInput(f"read_rep takes a rep id (int) or a rep from db.reps(), not {type(rep).__name__} "
                           f"{rep!r:.60}")

    def close(self) -> None:
        for other in self._attached.values():
            other.close()
        self._attached.clear()
        super().close()

    def session(self) -> Any:
        """``with db.session():`` holds one catalog connection across many writes
        (saves ~15 ms a write on DuckDB; keep it short, other processes wait)."""
        return self.catalog.session()

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Check every complete rep's array and checksum; ``repair`` removes leftovers
        of crashed writes and orphan arrays and quarantines corrupt reps."""
        from actdb.store.verify import verify

        return verify(self, repair=repair)

    def rm(self, *, model: Any = None, checkpoint: Any = None, dataset: Any = None, site: Any = None,
           rep: Any = None, yes: bool = False) -> Any:
        """Remove reps (model, checkpoint, dataset, site: names or globs; rep: ids), the
        cached results and moments that refer to them, and the checkpoints, models or
        datasets the filters name as a whole. Without ``yes=True`` nothing is deleted and
        the returned :class:`~actdb.store.prune.Removal` is the plan; see
        :func:`actdb.store.prune.remove`."""
        from actdb.store.prune import remove

        return remove(self, model=model, checkpoint=checkpoint, dataset=dataset, site=site, rep=rep, yes=yes)

    def clear_cache(self, *, measure: Any = None) -> Any:
        """Delete cached measure values (of ``measure`` only, when given) and, with no
        measure named, the cached per-rep moments; returns what was cleared."""
        from actdb.store.prune import clear_cache

        return clear_cache(self, measure=measure)

    def du(self, *, by: str = "checkpoint") -> list[dict[str, Any]]:
        """Disk usage: array bytes by model, checkpoint or site, the catalog, the caches."""
        from actdb.store.prune import disk_usage

        return disk_usage(self, by=by)

    def migrate(self) -> str:
        """Upgrade the catalog to this actdb's schema head (opening does it too)."""
        from actdb.store import migrate

        migrate.upgrade(self.catalog.engine)
        return migrate.head_revision()

    def sql(self, query: str, *, max_rows: int | None = 1_000_000, timeout: float | None = 60.0,
            max_bytes: int | None = 512 * 2**20, memory_limit: str | None = "1GB",
            threads: int | None = None) -> Any:
        """Run one read-only SELECT over the catalog views; returns a pyarrow Table.

        Views: models, checkpoints, datasets, examples, tokens, reps, results,
        dissimilarities, and CTEs of the query; the functions a BI query needs (the list:
        docs/interfaces.md). No writes, no file or network access. ``dissim(measure, rep_a,
        rep_b)`` computes (and caches) a measure inside the query; all the calls of one
        statement are batched into one plan. Limits (``None`` lifts one): ``timeout``
        seconds (the query is interrupted), ``max_rows`` / ``max_bytes`` of result,
        ``memory_limit`` of engine memory, ``threads`` engine threads (default: up to 4).
        """
        from actdb.query.sql import sql_with_dissim
        from actdb.query.sqllimits import DEFAULT_THREADS, Limits

        limits = Limits.parse(max_rows=max_rows, timeout=timeout, max_bytes=max_bytes, memory_limit=memory_limit,
                              threads=DEFAULT_THREADS if threads is None else threads)
        return sql_with_dissim(self, query, limits=limits)

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
