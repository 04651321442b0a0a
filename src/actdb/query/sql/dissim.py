"""Read-only SQL whose ``dissim(measure, rep_a, rep_b)`` calls are computed lazily.

:func:`sql_with_dissim` validates the query (:mod:`actdb.query.sql.guard`) and runs it on
the local store's catalog (:func:`actdb.store.sql_readonly.run_readonly`). When it calls
``dissim()``, the catalog engine answers each call from the cached values (default
parameters, all rows) and records the calls that find none; this module supplies what
the engine cannot know (:class:`DissimCalls`, a :class:`~actdb.store.sql_lookup.Lookup`):
the measures' default parameters, the missing values computed in ONE plan (and cached
when the store is writable), and the query's calls pointed at the engine's function.
The time limit covers the query runs, not the computation of missing values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import sqlglot.expressions as exp

from actdb.errors import InvalidInput, NotFound
from actdb.query import executor
from actdb.query.measures import REGISTRY, get_measure
from actdb.query.selection import list_reps
from actdb.query.sql.guard import check_select
from actdb.query.storage import Storage
from actdb.query.tasks import Task, params_hash, row_space
from actdb.store.sql_limits import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT, Limits
from actdb.store.sql_lookup import Default, Request
from actdb.store.sql_readonly import run_readonly, sql_dialect

if TYPE_CHECKING:
    from actdb.store.store import Store

_DISSIM = re.compile(r"\bdissim\s*\(", re.IGNORECASE)


class SqlStorage(Storage, Protocol):
    """What SQL needs from storage: the local store (whose catalog runs the query) and, for
    computing missing ``dissim()`` values, the query layer's :class:`Storage`."""

    @property
    def local(self) -> Store: ...


def sql_with_dissim(storage: SqlStorage, query: str, *, max_rows: int | None = DEFAULT_MAX_ROWS,
                    timeout: float | None = DEFAULT_TIMEOUT, limits: Limits | None = None) -> pa.Table:
    """Run one read-only SELECT over the local store's catalog views; an Arrow table.

    More than ``max_rows`` rows is an error (not a silent cut); a query running longer
    than ``timeout`` seconds is interrupted; ``limits`` (when given) replaces both.
    Calls of ``dissim(measure, rep_a, rep_b)`` are looked up in the cache; whatever is
    missing is computed in one plan, then the query runs again with the values filled in.
    A fully cached query runs once and calls no Python per row.
    """
    limits = limits or Limits.parse(max_rows=max_rows, timeout=timeout)
    store = storage.local
    tree = check_select(query, dialect=sql_dialect(store))
    lookup = DissimCalls(storage, tree) if _DISSIM.search(query) else None
    return run_readonly(store, query, limits, lookup=lookup)


class DissimCalls:
    """The ``dissim()`` calls of one checked query (a :class:`~actdb.store.sql_lookup.Lookup`)."""

    def __init__(self, storage: SqlStorage, tree: exp.Expression):
        self.storage = storage
        self.tree = tree  # shared with the validator's memo: never changed in place

    def defaults(self) -> Sequence[Default]:
        """(measure, default params hash, symmetric) for every registered measure."""
        return [(name, params_hash(spec.resolve_params({})), bool(spec.symmetric)) for name, spec in REGISTRY.items()]

    def rewrite(self, function: str) -> str:
        """The checked query with each ``dissim(m, a, b)`` call turned into ``function(m, a, b)``
        (a name qualified by its schema, e.g. ``pg_temp.actdb_dissim``; string literals and
        identifiers are untouched), as PostgreSQL SQL."""
        schema, _, name = function.rpartition(".")

        def swap(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Anonymous) and node.name.lower() == "dissim":
                if len(node.expressions) != 3:
                    raise InvalidInput(f"dissim() takes 3 arguments (measure, rep_a, rep_b), got "
                                       f"{len(node.expressions)}: {node.sql(dialect='postgres')}")
                call = exp.Anonymous(this=name, expressions=node.expressions)
                return exp.Dot(this=exp.to_identifier(schema), expression=call) if schema else call
            return node

        return self.tree.copy().transform(swap).sql(dialect="postgres")

    def compute(self, missing: set[Request]) -> dict[Request, float]:
        return compute_requests(self.storage, missing)


def compute_requests(storage: Storage, requests: set[Request]) -> dict[Request, float]:
    """Values of (measure, rep_a, rep_b) requests on the local store, computed as one plan."""
    if not requests:
        return {}
    reps = {r.rep_id: r for r in list_reps(storage)}
    tasks = []
    for measure, a, b in sorted(requests):
        spec = get_measure(measure)
        for rid in (a, b):
            if rid not in reps:
                raise NotFound(f"dissim({measure!r}, {a}, {b}): no complete rep with id {rid}")
        tasks.append(Task(reps[a], reps[b], measure, tuple(sorted(spec.resolve_params({}).items())),
                          row_space(reps[a], reps[b], None, None)))
    result = executor.run_plan(storage, tasks)
    return {(t.measure, t.a.rep_id, t.b.rep_id): row["value"] for t, row in zip(tasks, result.rows)}
