"""A :class:`StoreSet`: the local store plus the stores attached to it, by name.

Attached stores are opened read-only on first use; those recorded in the local store's
configuration (``actdb.json``, see :mod:`actdb.store.attachments`) come back on every open.
This is the storage the query layer works over: reps carry the name of their store
(``"local"`` or the attachment's), and :meth:`StoreSet.get` finds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from actdb.errors import AlreadyExists, InvalidInput, NotAStore, NotFound, ReadOnly, close_matches
from actdb.store import attachments
from actdb.store.arrays import RepArray
from actdb.store.parse import parse_name
from actdb.store.records import RepRecord, ResultValue
from actdb.store.rep_moments import MomentsKey
from actdb.store.reps import rep_records
from actdb.store.results import ResultKey
from actdb.store.store import Store


class StoreSet:
    """The local store and its attachments. Owns attaching, detaching and store lookup."""

    def __init__(self, local: Store):
        self.local = local
        self._opened: dict[str, Store] = {}  # attachments opened so far, by name
        self._attachments: dict[str, attachments.Attachment] = attachments.load(local.path)

    @property
    def read_only(self) -> bool:
        return self.local.read_only

    # ------------------------------------------------------------- attachments
    def attach(self, path_or_url: str | os.PathLike[str], *, name: str, catalog_url: str | None = None,
               persist: bool = False) -> Store:
        """Mount another store read-only under ``name`` (see :meth:`actdb.Database.attach`)."""
        local = self.local
        name = parse_name(name, "attached store")
        if name == "local" or name in self._opened or name in self._attachments:
            raise AlreadyExists(f"a store named {name!r} is already attached to {local.path}; choose another "
                                f"name{' (or detach it first)' if name != 'local' else ''}")
        if persist and local.read_only:
            raise ReadOnly(f"{local.path} is open read-only: open it for writing to change its attachments")
        text = os.fspath(path_or_url)
        if "://" in text:
            recorded, resolved = text, Path(text)
        else:
            resolved = Path(text).expanduser().resolve()
            if resolved == local.path:
                raise InvalidInput(f"cannot attach store {local.path} to itself")
            recorded = attachments.recorded_path(local.path, resolved) if persist else str(resolved)
            if not (resolved / attachments.MARKER).is_file():
                raise NotAStore(f"cannot attach {text!r}: {resolved} is not an actdb store (no "
                                f"{attachments.MARKER} in it); give the path of the other project's store")
        other = Store(text if "://" in text else resolved, catalog_url=catalog_url, read_only=True)
        att = attachments.Attachment(name, recorded, resolved, catalog_url, persisted=persist)
        if persist:
            attachments.save(local.path, att)
        self._attachments[name] = att
        self._opened[name] = other
        return other

    def detach(self, name: str) -> None:
        """Unmount an attached store; when persisted, remove it from the configuration too."""
        att = self._attachments.get(name)
        if att is None:
            raise NotFound(f"no attached store named {name!r} in {self.local.path}; "
                           f"{close_matches(str(name), self._attachments)}")
        if att.persisted:
            if self.local.read_only:
                raise ReadOnly(f"{self.local.path} is open read-only: open it for writing to change its attachments")
            attachments.remove(self.local.path, name)
        del self._attachments[name]
        other = self._opened.pop(name, None)
        if other is not None:
            other.close()

    def attachments(self) -> list[dict[str, Any]]:
        """The attached stores: name, path as recorded, resolved path, persisted, and ``ok``."""
        return [{"name": a.name, "path": a.path, "resolved": str(a.resolved), "catalog_url": a.catalog_url,
                 "persisted": a.persisted, "ok": a.exists} for a in self._attachments.values()]

    def get(self, name: str = "local") -> Store:
        """The local store (``"local"``) or an attached one, by name (opened read-only on first use)."""
        if name == "local":
            return self.local
        if name in self._opened:
            return self._opened[name]
        att = self._attachments.get(name)
        if att is None:
            raise NotFound(f"no attached store named {name!r}; {close_matches(name, self._attachments)}. "
                           f"Attach it with `actdb attach {self.local.path} PATH --name {name}` "
                           f"(Python: db.attach(path, name={name!r}))") from None
        if not att.exists:
            raise NotAStore(attachments.moved_message(self.local.path, att))
        other = Store(att.path if "://" in att.path else att.resolved, catalog_url=att.catalog_url, read_only=True)
        self._opened[name] = other
        return other

    def close(self) -> None:
        for other in self._opened.values():
            other.close()
        self._opened.clear()
        self.local.close()

    # ---------------------------------------------- what the query layer reads
    def complete_reps(self, store: str = "local") -> list[RepRecord]:
        """Every complete rep of one store, in selection order (catalog only)."""
        with self.get(store).catalog.connect() as conn:
            return rep_records(conn, "r.status = 'complete'", store=store)

    def open_rows(self, rep: RepRecord) -> RepArray:
        """The lazy array of a complete rep (of whichever store it comes from)."""
        return self.get(rep.store).reps.open(rep)

    def array_location(self, rep: RepRecord) -> tuple[str, dict[str, Any] | None]:
        """Where a rep's store keeps its arrays (a path or URL, and fsspec options): what a
        worker process needs to open the rep's array itself."""
        store = self.get(rep.store)
        return store.arrays_location, store.storage_options

    def examples(self, rep: RepRecord) -> pa.Table:
        """The example table (example, text, label, split) of a rep's dataset."""
        return self.get(rep.store).datasets.examples(rep.dataset)

    def token_table(self, rep: RepRecord) -> pa.Table:
        """The token table of a token-level rep (row order = the rep's rows)."""
        if rep.tokenization_id is None:
            raise InvalidInput(f"rep {rep.label()} is pooled per example ({rep.pooling}); it has no token table")
        return self.get(rep.store).tokenizations.token_table(rep.tokenization_id)

    def checkpoint_source(self, rep: RepRecord) -> str | None:
        """Where the weights of a rep's checkpoint were loaded from, if recorded."""
        return self.get(rep.store).models.checkpoint_source(rep.model, rep.checkpoint)

    # ---------------------------------------------------- caches (local catalog)
    def result_ids(self, reps: list[RepRecord], *, create: bool) -> dict[tuple[str, int], int]:
        """Each rep's id in the local catalog's caches (attached reps registered when ``create``)."""
        uris = {r.store: self.get(r.store).uri for r in reps if r.store != "local"}
        return self.local.results.rep_ids(reps, uris, create=create and not self.read_only)

    def cached_values(self, keys: list[ResultKey]) -> dict[ResultKey, ResultValue]:
        return self.local.results.lookup(keys)

    def store_values(self, rows: list[tuple[ResultKey, ResultValue, dict[str, Any]]],
                     defaults: dict[str, tuple[str, dict[str, Any], bool]]) -> None:
        if self.read_only:
            return
        with self.local.session():
            self.local.results.put(rows)
            self.local.results.sync_defaults(defaults)

    def load_rep_moments(self, keys: list[MomentsKey], *, data: bool) -> dict[MomentsKey, Any]:
        return self.local.rep_moments.load(keys, data=data)

    def store_rep_moments(self, items: list[tuple[MomentsKey, Any, int]]) -> None:
        self.local.rep_moments.store(items)

    def session(self) -> Any:
        return self.local.session()
