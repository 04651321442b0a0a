"""The background writer: a thread and a bounded queue between the forward pass and the store.

The main thread computes batch k+1 while this thread converts, checks, compresses and
writes batch k. The queue holds at most ``depth`` batches, so memory is bounded by the
batch size (plus the rep writers' shard buffers), never by the dataset size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

Item = Sequence[tuple[Any, Any]]  # (RepWriter, rows) pairs of one batch


class BackgroundWriter:
    """Append queued ``(writer, rows)`` pairs in a worker thread; errors surface in the caller."""

    def __init__(self, depth: int = 2):
        self._queue: queue.Queue[Item | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="actdb-ingest-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None or self._stop.is_set():
                continue  # drain without writing
            try:
                for writer, rows in item:
                    writer.append(rows)
            except BaseException as exc:  # handed to the caller
                self._error = exc

    def check(self) -> None:
        """Re-raise the worker's error, if any, in the calling thread."""
        if self._error is not None:
            raise self._error

    def put(self, item: Item) -> None:
        """Queue one batch (blocks while ``depth`` batches are waiting)."""
        while True:
            self.check()
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until everything queued is written; re-raise a worker error."""
        self._queue.put(None)
        self._thread.join()
        self.check()

    def abandon(self) -> None:
        """Stop after the batch in progress; queued batches are dropped (their rows were
        never flushed, so a resume recomputes them)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join()
