"""Threads of the store: the shared pool that reads and decodes chunks, and one-off background
work (hashing a block while its statistics run, summarising a shard while it is written)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def read_threads() -> int:
    """Threads that read and decode chunks: one per core, at least 2 (reads overlap decodes)."""
    return max(2, min(8, os.cpu_count() or 1))


def read_pool() -> ThreadPoolExecutor:
    """The shared chunk-decoding threads, created on first use (a forked child makes its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            if _pool is None:
                os.register_at_fork(after_in_child=_forget_pool)
            _pool = (os.getpid(), ThreadPoolExecutor(read_threads(), thread_name_prefix="actdb-read"))
        return _pool[1]


def _forget_pool() -> None:
    """In a forked child: the parent's threads (and any lock they held) do not exist here."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


def in_background(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``fn(*args)`` on a fresh thread; ``.result()`` waits and re-raises its error."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to the waiting caller
            future.set_exception(exc)

    threading.Thread(target=run, name="actdb-background", daemon=True).start()
    return future
