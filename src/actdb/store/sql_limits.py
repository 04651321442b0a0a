"""The limits every read-only SQL query runs under, and the checks of what it returns.

One query may use at most ``timeout`` seconds (the engine is interrupted at the wall:
DuckDB by ``interrupt()`` from a timer thread, PostgreSQL by ``statement_timeout``),
``memory_limit`` of engine memory (DuckDB ``memory_limit``; PostgreSQL ``work_mem`` per
sort or hash), ``threads`` engine threads (DuckDB), and return at most ``max_rows`` rows and
``max_bytes`` bytes (Arrow size). Going past any of them is an :class:`InvalidInput` that
names the limit and how to lift it, never a silent cut.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from actdb.errors import InvalidInput

DEFAULT_MAX_ROWS = 1_000_000
#: Seconds; ``timeout=None`` lifts the limit explicitly.
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_BYTES = 512 * 2**20
DEFAULT_MEMORY_LIMIT = "1GB"
DEFAULT_THREADS = max(1, min(4, os.cpu_count() or 1))
#: PostgreSQL ``work_mem`` of query transactions (memory per sort or hash node).
PG_WORK_MEM = "64MB"

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


def parse_memory(text: str) -> str:
    """A memory size such as ``"1GB"`` or ``"512MiB"``, normalised (no spaces)."""
    match = _MEMORY.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise InvalidInput(f"memory limit {text!r} is not a size; write it like '1GB' or '512MB'")
    return f"{match.group(1)}{match.group(2).upper().replace('I', 'i')}"


@dataclass(frozen=True)
class Limits:
    """What one query may use. ``None`` lifts a limit (``memory_limit`` and ``threads``: the
    engine's own defaults)."""

    max_rows: int | None = DEFAULT_MAX_ROWS
    timeout: float | None = DEFAULT_TIMEOUT
    max_bytes: int | None = DEFAULT_MAX_BYTES
    memory_limit: str | None = DEFAULT_MEMORY_LIMIT
    threads: int | None = DEFAULT_THREADS

    @classmethod
    def parse(cls, *, max_rows: int | None = DEFAULT_MAX_ROWS, timeout: float | None = DEFAULT_TIMEOUT,
              max_bytes: int | None = DEFAULT_MAX_BYTES, memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
              threads: int | None = DEFAULT_THREADS) -> Limits:
        for name, value in (("max_rows", max_rows), ("max_bytes", max_bytes), ("threads", threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInput(f"{name}={value!r} is not a positive whole number; give one or None")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
                    or timeout <= 0:
                raise InvalidInput(f"timeout={timeout!r} is not a positive number of seconds; give one, "
                                   "or None for no time limit")
            timeout = float(timeout)
        return cls(max_rows, timeout, max_bytes, None if memory_limit is None else parse_memory(memory_limit),
                   threads)

    def deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout

    def timed_out(self) -> InvalidInput:
        return InvalidInput(f"query ran longer than the {self.timeout:g} s time limit and was stopped; "
                            "narrow it, or raise the limit (timeout=..., --timeout)")

    def out_of_memory(self, detail: str) -> InvalidInput:
        return InvalidInput(f"query needed more memory than the limit of {self.memory_limit} and was stopped "
                            f"({detail}); narrow it, or raise the limit (memory_limit=..., --memory-limit)")

    def check_rows(self, rows: int) -> None:
        if self.max_rows is not None and rows > self.max_rows:
            raise InvalidInput(f"query returned more than {self.max_rows} rows; add a LIMIT or a WHERE clause "
                               "(or raise max_rows)")

    def check_bytes(self, nbytes: int) -> None:
        if self.max_bytes is not None and nbytes > self.max_bytes:
            raise InvalidInput(f"query result is larger than the limit of {self.max_bytes:,} bytes (max_bytes); "
                               "select fewer columns or rows (or raise max_bytes)")


def remaining(deadline: float | None, limits: Limits) -> float | None:
    """Seconds left before ``deadline``; the time-limit error when none are."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise limits.timed_out()
    return left


# Python's datetime covers years 1..9999; DuckDB and PostgreSQL also have +-infinity.
_DAY_MIN, _DAY_MAX = -719_162, 2_932_896
_UNIT = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def check_portable(table: pa.Table) -> pa.Table:
    """Refuse dates and timestamps that no client type can hold (``'infinity'::DATE``,
    year 10000+) with a one-line error naming the column, instead of failing later."""
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if pa.types.is_date32(kind):
            lo, hi, raw = _DAY_MIN, _DAY_MAX, column.cast(pa.int32())
        elif pa.types.is_timestamp(kind):
            per = _UNIT[kind.unit]
            lo, hi, raw = _DAY_MIN * 86_400 * per, (_DAY_MAX + 1) * 86_400 * per - 1, column.cast(pa.int64())
        else:
            continue
        if column.null_count == len(column):
            continue
        extremes = pc.min_max(raw).as_py()
        if extremes["min"] < lo or extremes["max"] > hi:
            raise InvalidInput(f"column {name!r} holds a date outside the years 1-9999 (such as 'infinity'), "
                               f"which results cannot carry; cast it to text in the query ({name}::VARCHAR)")
    return table
