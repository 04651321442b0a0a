"""Waiting out a busy DuckDB catalog file: the one retry loop of everything that opens it.

DuckDB lets one process open a file read-write, and while it does no other process can
open it at all (readers share it among themselves). An opener that finds the file
locked retries with backoff (10 ms, doubling to 0.5 s) for the store's busy timeout and
then raises :class:`StoreBusy` naming the process in the way. A writer that waits leaves
a note beside the file (``catalog.duckdb.writer-waiting``, see
:attr:`actdb.store.catalog.Catalog.intent_file`); readers about to open the file hold
back while a live writer waits, so that their shared locks cannot starve it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from actdb.errors import StoreBusy

T = TypeVar("T")

_LOCK_PATTERNS = ("Could not set lock", "Conflicting lock", "database is locked", "lock on file")
_PID = re.compile(r"PID (\d+)")

WRITER_INTENT_TTL = 30.0  # seconds after which a waiting writer's note is ignored (it died)


def is_lock_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the DuckDB file is held by another process."""
    text = str(exc)
    return any(p in text for p in _LOCK_PATTERNS)


def busy_error(exc: BaseException, where: str, *, holder: str = "writer") -> StoreBusy:
    """StoreBusy naming the process that holds the DuckDB file: a ``writer``, or a
    ``reader`` (a query; readers keep a writer out while they run)."""
    match = _PID.search(str(exc))
    if holder == "reader":
        pid = f"reader pid {match.group(1)}" if match else "a reader"
        return StoreBusy(
            f"store {where} is busy ({pid} has its DuckDB catalog open for reading, e.g. a long query; while "
            "any process reads, none may write). Retry when it finishes (queries stop at their time limit, "
            "60 s by default), talk to the store through `actdb serve`, or use a PostgreSQL catalog.")
    pid = f"writer pid {match.group(1)}" if match else "another process"
    return StoreBusy(
        f"store {where} is busy ({pid} holds its DuckDB catalog for writing). DuckDB allows "
        "one writing process at a time: retry when it finishes, talk to it through "
        "`actdb serve`, or use a PostgreSQL catalog for many writers."
    )


def announce_writer(path: str | None) -> bool:
    """Leave a note that this process waits to write (True when the note is ours)."""
    if path is None:
        return False
    try:
        with open(path, "x") as fh:
            fh.write(str(os.getpid()))
        return True
    except OSError:  # another writer waits already (or the folder is read-only)
        return False


def withdraw_writer(path: str | None) -> None:
    """Remove this process's note that it waits to write (another process's note stays)."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        with open(path) as fh:
            mine = fh.read().strip() == str(os.getpid())
        if mine:
            os.remove(path)


def yield_to_writer(path: str | None, deadline: float) -> None:
    """A reader about to open a DuckDB catalog waits while a live writer waits for it
    (readers' shared locks could otherwise keep a writer out indefinitely)."""
    if path is None:
        return
    delay = 0.005
    while time.monotonic() < deadline:
        try:
            age = time.time() - os.stat(path).st_mtime
            with open(path) as fh:
                pid = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            return
        if age > WRITER_INTENT_TTL or pid == os.getpid() or not _alive(pid):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_holder(database: str | None) -> Literal["reader", "writer"]:
    """Who holds a DuckDB file a writer could not lock: ``"reader"`` when it opens read-only
    right now (readers share the file), else ``"writer"``."""
    import duckdb

    if not database or database == ":memory:":
        return "writer"
    try:
        duckdb.connect(database, read_only=True).close()
    except duckdb.Error:
        return "writer"
    return "reader"


def retry_while_busy(open_file: Callable[[], T], *, timeout: float, where: str, intent_file: str | None,
                     write: bool = False, holder: Callable[[], str] | None = None) -> T:
    """``open_file()``, retried with backoff while another process holds the DuckDB file.

    A reader (``write=False``) first holds back while a writer waits (:func:`yield_to_writer`);
    a writer leaves its note (:func:`announce_writer`) on its first failed try and takes it
    away when done. Errors that are not lock errors pass through unchanged. After
    ``timeout`` seconds: :class:`StoreBusy` for store ``where``, naming the holder
    (``holder()``: ``"writer"`` or ``"reader"``; default ``"writer"``)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    announced = False
    try:
        while True:
            if not write:
                yield_to_writer(intent_file, deadline)
            try:
                return open_file()
            except Exception as exc:
                if not is_lock_error(exc):
                    raise
                if write and not announced:
                    announced = announce_writer(intent_file)
                if time.monotonic() > deadline:
                    raise busy_error(exc, where, holder="writer" if holder is None else holder()) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
    finally:
        if announced:
            withdraw_writer(intent_file)
