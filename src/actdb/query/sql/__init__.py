"""Read-only SQL over the catalog views (``db.sql``, ``actdb sql``, ``POST /v1/sql``).

A query must pass the allow-list of :mod:`~actdb.query.sql.guard` (one SELECT over the
documented views, CTEs and the functions a BI query needs) and runs within
:class:`Limits` (time, memory, threads, rows, bytes) on the catalog engine's sandbox
(:mod:`actdb.store.sql_readonly`: DuckDB read-only with file and network access off, or
PostgreSQL READ ONLY as the store's reader role). ``dissim(measure, rep_a, rep_b)`` calls
are computed lazily, all of one query in one plan (:mod:`~actdb.query.sql.dissim`).
:func:`csv_compatible` turns a result's nested columns into JSON text for CSV.
"""

from actdb.query.sql.dissim import SqlStorage, compute_requests, sql_with_dissim
from actdb.query.sql.guard import check_select
from actdb.query.sql.output import csv_compatible
from actdb.store.sql_limits import (
           DEFAULT_MAX_ROWS,
           DEFAULT_THREADS,
           DEFAULT_TIMEOUT,
           Limits,
)

__all__ = ["DEFAULT_MAX_ROWS", "DEFAULT_THREADS", "DEFAULT_TIMEOUT", "Limits", "SqlStorage", "check_select",
           "compute_requests", "csv_compatible", "sql_with_dissim"]
