"""The store: one directory with ``catalog.duckdb`` (or a catalog URL) and ``arrays/``.

All persistent state goes through :class:`Store`. Reps are written in two phases:
a catalog row with status ``writing``, then the array, then (one transaction) the row
flips to ``complete`` with its checksum and statistics. Readers only see ``complete``
reps; a crash leaves a ``writing`` row that a resumed ingest continues or
``verify(repair=True)`` removes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actdb._version import __version__
from actdb.errors import InvalidInput, NotAStore
from actdb.store import arrays as A
from actdb.store import migrate
from actdb.store.catalog import Catalog
from actdb.store.datasets import DatasetRepository
from actdb.store.models import ModelRepository
from actdb.store.moments_files import MomentFiles
from actdb.store.rep_moments import RepMomentsRepository
from actdb.store.reps import RepRepository
from actdb.store.results import ResultRepository
from actdb.store.tokenizations import TokenizationRepository

MARKER = "actdb.json"
FORMAT = 1


class Store:
    """One store directory: its catalog, its array root, and the repositories that are the
    only readers and writers of their tables (``models`` with checkpoints, ``datasets``,
    ``tokenizations``, ``reps``, ``results``, ``rep_moments``). See :func:`actdb.open`."""

    def __init__(self, path: str | os.PathLike[str], *, catalog_url: str | None = None,
                 read_only: bool = False, create: bool = True, busy_timeout: float = 10.0,
                 arrays_url: str | None = None, storage_options: dict[str, Any] | None = None):
        self.path = Path(path).expanduser().resolve()
        if arrays_url is not None:
            arrays_url = A.parse_arrays_url(arrays_url)
        self.read_only = read_only
        marker = self.path / MARKER
        if marker.is_file():
            info = json.loads(marker.read_text())
            stored_url = info.get("catalog_url")
            if catalog_url is not None and stored_url is not None and catalog_url != stored_url:
                raise InvalidInput(f"store {self.path} uses catalog {stored_url!r}, not {catalog_url!r}")
            catalog_url = catalog_url or stored_url
            arrays_location = info.get("arrays", "arrays")
            if arrays_url is not None and arrays_url != arrays_location:
                raise InvalidInput(f"store {self.path} keeps its arrays at {arrays_location!r}, not {arrays_url!r}")
        elif self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise NotAStore(
                f"{self.path} is not an actdb store (no {MARKER} in it); pass an empty or new "
                "directory to create one, or the path of an existing store"
            )
        elif read_only or not create:
            raise NotAStore(f"{self.path} is not an actdb store yet; create it with `actdb init {self.path}`")
        else:
            arrays_location = arrays_url or "arrays"
            self.path.mkdir(parents=True, exist_ok=True)
            if arrays_url is None:
                (self.path / "arrays").mkdir(exist_ok=True)
            tmp = self.path / (MARKER + ".tmp")
            tmp.write_text(json.dumps({"format": FORMAT, "catalog_url": catalog_url, "arrays": arrays_location}))
            tmp.replace(marker)
        self.catalog_url = catalog_url or f"duckdb:///{self.path / 'catalog.duckdb'}"
        location = str(arrays_location)
        if "://" not in location:
            location = str(self.path / location)
        self.arrays_location = location
        self.storage_options = storage_options
        self.catalog = Catalog(self.catalog_url, read_only=read_only, where=str(self.path), busy_timeout=busy_timeout)
        self.root = A.open_root(location, read_only=read_only, storage_options=storage_options)
        self._prepare_schema()
        where = str(self.path)
        self.models = ModelRepository(self.catalog, where)
        self.datasets = DatasetRepository(self.catalog, self.root, where)
        self.tokenizations = TokenizationRepository(self.catalog, self.datasets)
        self.reps = RepRepository(self.catalog, self.root, where, models=self.models, datasets=self.datasets,
                                  tokenizations=self.tokenizations)
        self.results = ResultRepository(self.catalog, __version__)
        self.rep_moments = RepMomentsRepository(self.catalog, self.moment_files, read_only=read_only,
                                                version=__version__)

    # ----------------------------------------------------------------- schema
    def _prepare_schema(self) -> None:
        if self.read_only and self.catalog.dialect == "duckdb" and not (self.path / "catalog.duckdb").exists():
            raise NotAStore(f"{self.path} has no catalog yet; open it once for writing to create it")
        with self.catalog.connect() as conn:
            revision = migrate.current_revision(conn)
        migrate.check_revision(revision, str(self.path))
        if revision != migrate.head_revision():
            if self.read_only:
                raise InvalidInput(
                    f"store {self.path} is at schema revision {revision!r}, older than this actdb's "
                    f"{migrate.head_revision()!r}; run `actdb migrate {self.path}` (or open it for writing once)"
                )
            migrate.upgrade(self.catalog.engine)

    @property
    def moment_files(self) -> MomentFiles:
        """The cached per-rep moments' groups beside the arrays
        (:class:`~actdb.store.moments_files.MomentFiles`)."""
        return MomentFiles(self.root)

    def schema_revision(self) -> str | None:
        with self.catalog.connect() as conn:
            return migrate.current_revision(conn)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold one catalog connection across many operations (see :meth:`Catalog.session`)."""
        with self.catalog.session():
            yield

    @property
    def uri(self) -> str:
        """The store's identity in another store's catalog (its resolved path)."""
        return str(self.path)

    def close(self) -> None:
        self.catalog.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}{' read-only' if self.read_only else ''}>"
