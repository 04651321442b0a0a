"""The one busy-retry loop of every opener of a DuckDB catalog file (actdb.store.busy)."""

from __future__ import annotations

import os
import time

import pytest

from actdb.errors import StoreBusy
from actdb.store.busy import retry_while_busy

LOCKED = "IO Error: Could not set lock on file \"c.duckdb\": Conflicting lock is held in python (PID 4242)"


def opener(failures: int, exc: Exception | None = None, seen: list[bool] | None = None, note: str | None = None):
    """An open_file() that fails ``failures`` times with ``exc`` (a lock error), then returns "open"."""
    calls = []

    def open_file() -> str:
        calls.append(1)
        if seen is not None and note is not None:
            seen.append(os.path.exists(note))
        if len(calls) <= failures:
            raise exc or RuntimeError(LOCKED)
        return "open"

    return open_file, calls


def test_a_lock_error_is_retried_until_the_file_is_free(tmp_path):
    open_file, calls = opener(3)
    assert retry_while_busy(open_file, timeout=5.0, where="s", intent_file=None) == "open"
    assert len(calls) == 4


def test_past_the_timeout_the_holder_is_named():
    open_file, _ = opener(10**6)
    t0 = time.monotonic()
    with pytest.raises(StoreBusy, match=r"store s is busy \(writer pid 4242 holds"):
        retry_while_busy(open_file, timeout=0.2, where="s", intent_file=None)
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(StoreBusy, match=r"reader pid 4242 has its DuckDB catalog open for reading"):
        retry_while_busy(open_file, timeout=0.05, where="s", intent_file=None, write=True, holder=lambda: "reader")


def test_other_errors_pass_through_at_once():
    open_file, calls = opener(1, ValueError("not a lock error"))
    with pytest.raises(ValueError, match="not a lock error"):
        retry_while_busy(open_file, timeout=5.0, where="s", intent_file=None)
    assert len(calls) == 1


def test_a_waiting_writer_leaves_a_note_and_takes_it_away(tmp_path):
    note = str(tmp_path / "c.duckdb.writer-waiting")
    seen: list[bool] = []
    open_file, _ = opener(2, seen=seen, note=note)
    assert retry_while_busy(open_file, timeout=5.0, where="s", intent_file=note, write=True) == "open"
    assert seen == [False, True, True] and not os.path.exists(note)


def test_a_reader_holds_back_while_a_live_writer_waits(tmp_path):
    note = tmp_path / "c.duckdb.writer-waiting"
    note.write_text(str(os.getppid()))  # a live process that is not this one
    open_file, calls = opener(0)
    t0 = time.monotonic()
    assert retry_while_busy(open_file, timeout=0.3, where="s", intent_file=str(note)) == "open"
    assert time.monotonic() - t0 >= 0.25 and len(calls) == 1
    note.write_text("999999999")  # a writer that died: not waited for
    t0 = time.monotonic()
    assert retry_while_busy(open_file, timeout=5.0, where="s", intent_file=str(note)) == "open"
    assert time.monotonic() - t0 < 1.0
