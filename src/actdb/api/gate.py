"""How the server shares one store between concurrent requests.

The server is the single owner of its store. Three rules:

* **Keep the DuckDB file open.** Each catalog transaction opens the file unless the
  process already holds it; the server keeps one idle connection open for its lifetime,
  so a transaction does not pay for the open (the costs: docs/interfaces.md).
* **Read-only SQL runs alone.** ``Database.sql`` opens DuckDB read-only, which DuckDB
  refuses while this process holds the file read-write; so ``/v1/sql`` takes the gate
  exclusively (waits for running requests, closes the kept connection, runs, reopens).
  Every other request holds the gate shared. With PostgreSQL there is nothing to close
  and SQL runs shared.
* **Remember answers while nothing changes.** With DuckDB the kept connection makes the
  server the store's only writer (no other process can open the file), so the server
  knows when the catalog changes: a computation that stored values, or a SQL request
  (``dissim()`` may compute, and the file was briefly released). Each bumps
  :attr:`Gate.generation`; responses are remembered per generation (:meth:`remember`).
  With PostgreSQL other processes may write at any time, so nothing is remembered.
* **Compute once, write one at a time.** A comparison whose values are all cached is a
  lookup and runs concurrently. One that needs computing first locks each missing
  result's cache key (sorted, so two requests never deadlock), then the write lock;
  a request that waited for another request computing the same pair finds it cached
  and does not compute it again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from actdb.errors import ActdbError, InvalidInput
from actdb.store.keeper import Held, holds_file, keep_open

if TYPE_CHECKING:
    from actdb.database import Database

T = TypeVar("T")
log = logging.getLogger("actdb.api")


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class KeyLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits on it."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[Any, list[Any]] = {}  # key -> [lock, users]

    @contextlib.contextmanager
    def hold(self, keys: list[Any]) -> Iterator[None]:
        held = []
        try:
            for key in sorted(set(keys)):
                with self._mutex:
                    entry = self._locks.setdefault(key, [threading.Lock(), 0])
                    entry[1] += 1
                entry[0].acquire()
                held.append(key)
            yield
        finally:
            for key in reversed(held):
                with self._mutex:
                    entry = self._locks[key]
                    entry[0].release()
                    entry[1] -= 1
                    if not entry[1]:
                        del self._locks[key]

    def __len__(self) -> int:
        with self._mutex:
            return len(self._locks)


class Gate:
    """Shared/exclusive access to one Database for the server's worker threads."""

    def __init__(self, db: Database, *, max_values: int = 20_000):
        self.db = db
        self.max_values = max_values
        self.is_duckdb = holds_file(db.store)
        self._rw = RWLock()
        self._write = threading.Lock()
        self._keys = KeyLocks()
        self._keeper: Held | None = None
        self._keeper_mutex = threading.Lock()
        self.computations = 0  # comparisons that computed something (for tests and /healthz)
        self.generation = 0  # bumped whenever the catalog may have changed
        self.remember_enabled = self.is_duckdb
        self._memo: OrderedDict[Any, Any] = OrderedDict()
        self._memo_mutex = threading.Lock()
        self.memo_size = 512

    # ------------------------------------------------------------ remembered answers
    def bump(self) -> None:
        with self._memo_mutex:
            self.generation += 1
            self._memo.clear()

    def remember(self, key: Any, make: Callable[[], tuple[T, bool]]) -> T:
        """The answer for ``key`` at this generation; ``make()`` returns (answer, keep)."""
        if not self.remember_enabled:
            return make()[0]
        with self._memo_mutex:
            full = (self.generation, key)
            if full in self._memo:
                self._memo.move_to_end(full)
                return self._memo[full]  # type: ignore[no-any-return]
            generation = self.generation
        value, keep = make()
        if keep:
            with self._memo_mutex:
                if self.generation == generation:
                    self._memo[(generation, key)] = value
                    while len(self._memo) > self.memo_size:
                        self._memo.popitem(last=False)
        return value

    # ------------------------------------------------------------- the kept file
    def open(self) -> None:
        """Hold the DuckDB catalog open (no-op for other catalogs)."""
        if not self.is_duckdb:
            return
        with self._keeper_mutex:
            if self._keeper is None:
                self._keeper = keep_open(self.db.store)

    def close(self) -> None:
        with self._keeper_mutex:
            if self._keeper is not None:
                self._keeper.close()
                self._keeper = None

    # ------------------------------------------------------------------- access
    @contextlib.contextmanager
    def shared(self) -> Iterator[Database]:
        with self._rw.read():
            yield self.db

    def exclusive(self, fn: Callable[[Database], T]) -> T:
        """``fn(db)`` with sole access and the kept connection closed (DuckDB); shared
        access otherwise. Used for ``Database.sql``, which opens DuckDB read-only."""
        if not self.is_duckdb:
            with self._rw.read():
                return fn(self.db)
        failure: BaseException | None = None
        with self._rw.write():
            was_open = self._keeper is not None
            self.close()
            try:
                result = fn(self.db)
            except Exception as exc:  # re-raised below, after reopening
                failure = exc
            if failure is not None:
                # the traceback's frames may hold the read-only connection's Arrow reader,
                # which keeps DuckDB's read-only instance alive: drop them before reopening
                if not isinstance(failure, ActdbError):
                    log.error("error in exclusive store access", exc_info=failure)
                failure.__traceback__ = None
            if was_open:
                self.open()
            self.bump()
        if failure is not None:
            raise failure
        return result

    @contextlib.contextmanager
    def writing(self) -> Iterator[Database]:
        """Shared access as the one writer of computed values (comparisons, probes): values
        land in the catalog one request at a time."""
        with self.shared() as db, self._write:
            yield db

    # ------------------------------------------------------------------ compute
    def compute(self, comparison: Any) -> Any:
        """Compute a comparison: lookups concurrently, missing values once each."""
        from actdb.query.cache import cached_values
        from actdb.query.executor import run_plan

        with self.shared():
            tasks = comparison.tasks()
            if len(tasks) > self.max_values:
                raise InvalidInput(f"the comparison asks for {len(tasks):,} values; this server computes at most "
                                   f"{self.max_values:,} per request: narrow the selections or use pairs=same_layer")
            stderr = bool(getattr(comparison, "stderr", False))
            cached = cached_values(self.db.stores, tasks, stderr=stderr)
            missing = [t.cache_key for t in tasks if t.cache_key not in cached]
            if not missing:
                return run_plan(self.db.stores, tasks, stderr=stderr)
            with self._keys.hold(missing), self._write:
                result = run_plan(self.db.stores, tasks, stderr=stderr)
                if any(not r["cached"] for r in result.rows):
                    self.computations += 1
                    self.bump()
                return result
