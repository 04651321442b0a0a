"""What the query layer needs from storage, as a protocol (``actdb.store.StoreSet`` is it).

The query engine (selections, plans, the executor, caches, read-back) is typed against
:class:`Storage` and never reaches into a catalog, an array root or the ``Database`` facade:
it lists complete reps, opens a rep's rows, reads a rep's examples and tokens, and reads
and writes cached values and per-rep moments, all through these methods.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

import pyarrow as pa

from actdb.store.arrays import RepArray
from actdb.store.records import RepRecord, ResultValue
from actdb.store.rep_moments import MomentsKey
from actdb.store.results import ResultKey


class Storage(Protocol):
    """The local store and its attachments, as the query layer sees them."""

    @property
    def read_only(self) -> bool: ...

    def complete_reps(self, store: str = "local") -> list[RepRecord]: ...

    def open_rows(self, rep: RepRecord) -> RepArray: ...

    def array_location(self, rep: RepRecord) -> tuple[str, dict[str, Any] | None]: ...

    def examples(self, rep: RepRecord) -> pa.Table: ...

    def token_table(self, rep: RepRecord) -> pa.Table: ...

    def checkpoint_source(self, rep: RepRecord) -> str | None: ...

    def result_ids(self, reps: list[RepRecord], *, create: bool) -> dict[tuple[str, int], int]: ...

    def cached_values(self, keys: list[ResultKey]) -> dict[ResultKey, ResultValue]: ...

    def store_values(self, rows: list[tuple[ResultKey, ResultValue, dict[str, Any]]],
                     defaults: dict[str, tuple[str, dict[str, Any], bool]]) -> None: ...

    def load_rep_moments(self, keys: list[MomentsKey], *, data: bool) -> dict[MomentsKey, Any]: ...

    def store_rep_moments(self, items: list[tuple[MomentsKey, Any, int]]) -> None: ...

    def session(self) -> AbstractContextManager[Any]: ...
