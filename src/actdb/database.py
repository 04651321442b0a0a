"""``Database``: the one entry object. Store operations plus query and ingest verbs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from actdb.errors import InvalidInput
from actdb.store import Store, StoreSet, VerifyReport
from actdb.store.arrays import RepArray
from actdb.store.catalog import Catalog
from actdb.store.records import CheckpointInfo, DatasetInfo, ModelInfo, RepRecord, TokenizationInfo
from actdb.store.rep_writer import RepWriter

if TYPE_CHECKING:
    from actdb.query.selection import Selection


class Database:
    """An open actdb store. Create with :func:`actdb.open`.

    A thin facade: everything a user needs is reachable from here, and each method hands
    its work to a part — the local :class:`~actdb.store.Store` and its repositories
    (datasets, models, checkpoints, reps: :meth:`add_dataset`, :meth:`write_rep`,
    :meth:`read_rep`), the attached stores (:meth:`attach`), ingest (:meth:`ingest`), lazy
    comparisons (:meth:`reps`) and SQL (:meth:`sql`).
    """

    def __init__(self, path: str | os.PathLike[str], *, catalog_url: str | None = None, read_only: bool = False,
                 create: bool = True, busy_timeout: float = 10.0, arrays_url: str | None = None,
                 storage_options: dict[str, Any] | None = None):
        self.store = Store(path, catalog_url=catalog_url, read_only=read_only, create=create,
                           busy_timeout=busy_timeout, arrays_url=arrays_url, storage_options=storage_options)
        self.stores = StoreSet(self.store)

    # ------------------------------------------------------- the store's facts
    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def read_only(self) -> bool:
        return self.store.read_only

    @property
    def catalog(self) -> Catalog:
        """The catalog connection (operators and tests; library code goes through repositories)."""
        return self.store.catalog

    @property
    def catalog_url(self) -> str:
        return self.store.catalog_url

    @property
    def arrays_location(self) -> str:
        return self.store.arrays_location

    @property
    def storage_options(self) -> dict[str, Any] | None:
        return self.store.storage_options

    def schema_revision(self) -> str | None:
        return self.store.schema_revision()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Database {self.path}{' read-only' if self.read_only else ''}>"

    # ---------------------------------------------------- models, checkpoints
    def add_model(self, name: str, *, family: str | None = None, architecture: str | None = None,
                  width: int | None = None, depth: int | None = None, n_params: int | None = None,
                  meta: dict[str, Any] | None = None) -> ModelInfo:
        """Register a model (idempotent: an existing model of that name is returned, with
        any newly given metadata filled in)."""
        return self.store.models.add(name, family=family, architecture=architecture, width=width, depth=depth,
                                     n_params=n_params, meta=meta)

    def model(self, name: str) -> ModelInfo:
        return self.store.models.get(name)

    def models(self) -> list[ModelInfo]:
        return self.store.models.all()

    def add_checkpoint(self, model: str, name: str, *, step: int | None = None, tokens_seen: int | None = None,
                       weights_hash: str | None = None, source: str | None = None,
                       meta: dict[str, Any] | None = None) -> CheckpointInfo:
        """Register a checkpoint of ``model`` (created if new). Idempotent for equal
        arguments; a different ``weights_hash`` for an existing name is refused."""
        return self.store.models.add_checkpoint(model, name, step=step, tokens_seen=tokens_seen,
                                                weights_hash=weights_hash, source=source, meta=meta)

    def checkpoint(self, model: str, name: str) -> CheckpointInfo:
        return self.store.models.checkpoint(model, name)

    def checkpoints(self, model: str | None = None) -> list[CheckpointInfo]:
        """Checkpoints (of one model, or all), ordered by model then step."""
        return self.store.models.checkpoints(model)

    def duplicate_checkpoints(self) -> list[CheckpointInfo]:
        """Checkpoints whose weights hash equals an earlier checkpoint's of the same model."""
        return self.store.models.duplicate_checkpoints()

    # ------------------------------------------------------ datasets, tokens
    def add_dataset(self, name: str, texts: Iterable[str], *, labels: Sequence[Any] | None = None,
                    splits: Sequence[Any] | None = None, meta: dict[str, Any] | None = None) -> DatasetInfo:
        """Store a list of texts (the stimuli), with optional labels and splits; identified by
        its texts (see :meth:`actdb.store.datasets.DatasetRepository.add`)."""
        return self.store.datasets.add(name, texts, labels=labels, splits=splits, meta=meta)

    def annotate(self, dataset: str, *, labels: Sequence[Any] | None = None,
                 splits: Sequence[Any] | None = None) -> DatasetInfo:
        """Set (or replace) the labels and/or splits of a stored dataset, one per example."""
        return self.store.datasets.annotate(dataset, labels=labels, splits=splits)

    def dataset(self, name: str) -> DatasetInfo:
        return self.store.datasets.get(name)

    def datasets(self) -> list[DatasetInfo]:
        return self.store.datasets.all()

    def texts(self, dataset: str) -> list[str]:
        return self.store.datasets.texts(dataset)

    def examples(self, dataset: str) -> pa.Table:
        """The example table of a dataset: example, text, label, split."""
        return self.store.datasets.examples(dataset)

    def add_tokenization(self, dataset: str, tokenizer: str, tokens: Any, *, max_length: int = 0,
                         tokenizer_hash: str | None = None, n_truncated: int = 0) -> TokenizationInfo:
        """Store the token table of ``dataset`` tokenized by ``tokenizer`` (row -> example,
        position, token id, token text, char span, special flag). Idempotent for equal content."""
        return self.store.tokenizations.add(dataset, tokenizer, tokens, max_length=max_length,
                                            tokenizer_hash=tokenizer_hash, n_truncated=n_truncated)

    def tokenization(self, dataset: str, tokenizer: str, max_length: int | None = None) -> TokenizationInfo:
        return self.store.tokenizations.get(dataset, tokenizer, max_length)

    def token_table(self, tokenization_id: int) -> pa.Table:
        """The token table (row order) of a tokenization, as Arrow."""
        return self.store.tokenizations.token_table(tokenization_id)

    # ------------------------------------------------------------------- reps
    def write_rep(self, model: str, checkpoint: str, dataset: str, site: str, array: Any, *,
                  tokens: Any = None, tokenizer: str | None = None, pooling: str = "token",
                  dtype: str = "float16", max_length: int = 0, layer: int | None = None,
                  allow_nonfinite: bool = False, overwrite: bool = False, codec: str | None = None) -> RepRecord:
        """Store one rep: ``array`` is ``(n_rows, dim)``, numpy or torch, any float dtype.

        Token-level reps (``pooling="token"``) need their token table: pass ``tokens``
        (and a ``tokenizer`` name) or the ``tokenizer`` of a token table already stored
        for ``dataset``. Example-level reps (``mean``, ``first``, ``last``) have one row
        per example. Everything is validated before anything is written.
        """
        return self.store.reps.write(model, checkpoint, dataset, site, array, tokens=tokens, tokenizer=tokenizer,
                                     pooling=pooling, dtype=dtype, max_length=max_length, layer=layer,
                                     allow_nonfinite=allow_nonfinite, overwrite=overwrite, codec=codec)

    def rep_writer(self, model: str, checkpoint: str, dataset: str, site: str, **kwargs: Any) -> RepWriter:
        """A :class:`~actdb.store.RepWriter` for streaming a rep in (``n_rows``, ``dim``, and
        the options of :meth:`write_rep`; ``resume=True`` continues an interrupted write)."""
        return self.store.reps.writer(model, checkpoint, dataset, site, **kwargs)

    def find_reps(self, *, model: str | None = None, checkpoint: str | None = None, dataset: str | None = None,
                  site: str | None = None, pooling: str | None = None, status: str = "complete") -> list[RepRecord]:
        """Reps matching exact values (:meth:`reps` adds globs and ranges)."""
        return self.store.reps.find(model=model, checkpoint=checkpoint, dataset=dataset, site=site,
                                    pooling=pooling, status=status)

    def rep_meta(self, rep_id: int) -> dict[str, Any]:
        return self.store.reps.meta(rep_id)

    # ------------------------------------------------------------------ queries
    def reps(self, **filters: Any) -> Selection:
        """A lazy selection of complete reps. Each filter (model, checkpoint, site, layer,
        step, dataset, pooling, tokenizer, family, architecture, width, depth, store) takes a
        value, a list, a glob (``"step*"``) or, for numbers, a slice/range
        (``layer=slice(2, 6)``). Nothing is read until the selection is iterated (catalog
        only) or a comparison of it is computed."""
        from actdb.query.selection import Selection

        return Selection.build(self.stores, filters)

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
            return self.store.reps.record(rep_id)
        if not filters:
            raise InvalidInput("db.rep() needs filters naming one rep, e.g. db.rep(model='m', checkpoint='final', "
                               "site='hidden.3'), or a rep id")
        return self.reps(**filters).one()

    def attach(self, path_or_url: str | os.PathLike[str], *, name: str, catalog_url: str | None = None,
               persist: bool = False) -> Store:
        """Mount another store read-only under ``name``: ``db.reps(store=name, ...)``
        selects its reps, and they compare with local reps of the same texts.

        By default the attachment lasts as long as this ``Database`` object. With
        ``persist=True`` it becomes part of this store's configuration (``actdb.json``;
        the same as ``actdb attach STORE PATH --name NAME``): every later ``actdb.open``,
        CLI command and ``actdb serve`` of this store attaches it again. A relative path
        is recorded relative to this store. Persisting needs the store open for writing.
        """
        return self.stores.attach(path_or_url, name=name, catalog_url=catalog_url, persist=persist)

    def detach(self, name: str) -> None:
        """Unmount an attached store; when it is part of this store's configuration, remove it
        there too (needs the store open for writing)."""
        self.stores.detach(name)

    def attachments(self) -> list[dict[str, Any]]:
        """The attached stores: name, path as recorded, resolved path, whether it is persisted
        in this store's configuration, and whether a store is there (``ok``)."""
        return self.stores.attachments()

    def store_handle(self, name: str = "local") -> Store:
        """This store (``"local"``) or an attached one, by name (opened read-only on first use)."""
        return self.stores.get(name)

    def read_rep(self, rep: Any) -> RepArray:
        """A lazy handle on a complete rep's array (row slices read only their chunks).

        ``rep``: a rep id (int), a rep handle as ``db.rep(...)`` returns and ``db.reps()``
        yields it, or a :class:`~actdb.store.records.RepRecord` (also of an attached store).
        Row ``i`` of a token-level rep is row ``i`` of its token table, in (example,
        position) order, padding dropped; row ``i`` of a pooled rep (mean/first/last) is
        example ``i`` of the dataset.
        """
        import numbers

        record = getattr(rep, "record", rep)  # a RepHandle holds its record
        if isinstance(record, RepRecord):
            return self.stores.get(record.store).reps.open(record)
        if isinstance(rep, numbers.Integral) and not isinstance(rep, bool):
            return self.store.reps.open(int(rep))
        raise InvalidInput(f"read_rep takes a rep id (int) or a rep from db.reps(), not {type(rep).__name__} "
                           f"{rep!r:.60}")

    def close(self) -> None:
        self.stores.close()

    def session(self) -> Any:
        """``with db.session():`` holds one catalog connection across many writes
        (on DuckDB, one open of the file for all of them; keep it short, other processes wait)."""
        return self.store.session()

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Check every complete rep's array and checksum; ``repair`` removes leftovers
        of crashed writes and orphan arrays and quarantines corrupt reps."""
        from actdb.store.verify import verify

        return verify(self.store, repair=repair)

    def rm(self, *, model: Any = None, checkpoint: Any = None, dataset: Any = None, site: Any = None,
           rep: Any = None, yes: bool = False) -> Any:
        """Remove reps (model, checkpoint, dataset, site: names or globs; rep: ids), the
        cached results and moments that refer to them, and the checkpoints, models or
        datasets the filters name as a whole. Without ``yes=True`` nothing is deleted and
        the returned :class:`~actdb.store.prune.Removal` is the plan; see
        :func:`actdb.store.prune.remove`."""
        from actdb.store.prune import remove

        return remove(self.store, model=model, checkpoint=checkpoint, dataset=dataset, site=site, rep=rep, yes=yes)

    def clear_cache(self, *, measure: Any = None) -> Any:
        """Delete cached measure values (of ``measure`` only, when given) and, with no
        measure named, the cached per-rep moments; returns what was cleared."""
        from actdb.store.prune import clear_cache

        return clear_cache(self.store, measure=measure)

    def du(self, *, by: str = "checkpoint") -> list[dict[str, Any]]:
        """Disk usage: array bytes by model, checkpoint or site, the catalog, the caches."""
        from actdb.store.prune import disk_usage

        return disk_usage(self.store, by=by)

    def migrate(self) -> str:
        """Upgrade the catalog to this actdb's schema head (opening does it too)."""
        from actdb.store import migrate

        migrate.upgrade(self.store.catalog.engine)
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
        from actdb.query.sql import DEFAULT_THREADS, Limits, sql_with_dissim

        limits = Limits.parse(max_rows=max_rows, timeout=timeout, max_bytes=max_bytes, memory_limit=memory_limit,
                              threads=DEFAULT_THREADS if threads is None else threads)
        return sql_with_dissim(self.stores, query, limits=limits)

    def ingest(self, model: Any, dataset: Any, **kwargs: Any) -> Any:
        """Run a transformers model over a dataset; see :func:`actdb.ingest.run`."""
        from actdb.ingest import run

        return run(self.store, model, dataset, **kwargs)


def open(path: str, *, catalog_url: str | None = None, read_only: bool = False,  # public name
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
