"""Read-only SQL over the catalog views.

``run_sql`` accepts one SELECT (or WITH ... SELECT) statement made only of allowed parts
(:mod:`actdb.query.sqlguard`: the documented views, CTEs, and the functions a BI query
needs) and runs it within :class:`~actdb.query.sqllimits.Limits` (time, memory, threads,
rows, bytes). DuckDB: on a connection opened read-only with ``enable_external_access =
false``, the memory and thread limits set and the configuration locked, interrupted at the
time limit. PostgreSQL (:mod:`actdb.query.sql_postgres`): in a READ ONLY transaction as the
store's reader role, ``search_path`` pinned to the store's schema, ``statement_timeout``
and ``work_mem`` set.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlglot.expressions as exp

from actdb.errors import InvalidInput
from actdb.query.sqlguard import check_select
from actdb.query.sqllimits import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT, Limits, check_portable, remaining

if TYPE_CHECKING:
    from actdb.store.store import Store

__all__ = ["DEFAULT_MAX_ROWS", "DEFAULT_TIMEOUT", "Limits", "check_select", "compute_requests", "fetch",
           "readonly_duckdb", "run_sql", "sql_with_dissim"]

_DISSIM = re.compile(r"\bdissim\s*\(", re.IGNORECASE)


def _dialect(store: Any) -> str:
    return "postgres" if store.catalog.dialect == "postgresql" else "duckdb"


def run_sql(store: Store, query: str, *, max_rows: int | None = DEFAULT_MAX_ROWS,
            timeout: float | None = DEFAULT_TIMEOUT, functions: dict[str, Any] | None = None,
            limits: Limits | None = None) -> pa.Table:
    """Run one read-only SELECT over the catalog; return an Arrow table.

    More than ``max_rows`` rows is an error (not a silent cut); a query running longer
    than ``timeout`` seconds is interrupted. ``limits`` (when given) replaces both.
    """
    limits = limits or Limits.parse(max_rows=max_rows, timeout=timeout)
    check_select(query, dialect=_dialect(store))
    if store.catalog.dialect == "duckdb":
        with readonly_duckdb(store, functions or {}, limits) as con:
            return fetch(con, query, limits, limits.deadline())
    from actdb.query.sql_postgres import run_postgres

    return run_postgres(store, query, limits)


@contextlib.contextmanager
def readonly_duckdb(store: Store, functions: dict[str, Any] | None = None,
                    limits: Limits | None = None) -> Iterator[Any]:
    """A read-only DuckDB connection on the catalog with file and network access off, the
    memory and thread limits set and the configuration locked; ``functions`` (name -> (fn,
    param types, return type)) are registered first as vectorised Arrow UDFs. While the
    catalog file is unchanged, repeated queries run on an in-memory copy of it
    (:mod:`actdb.query.snapshot`; one copy per memory/thread setting)."""
    from actdb.query.snapshot import SNAPSHOTS

    settings = engine_settings(limits or Limits())
    path = str(store.path / "catalog.duckdb")
    con = SNAPSHOTS.cursor(path, lambda mem, p: _with_busy_retry(
        store, lambda: mem.execute(f"ATTACH '{_quote(p)}' AS src (READ_ONLY)")), settings)
    if con is None:  # (the default settings are left implicit: tests wrap _connect_duckdb(store, path))
        con = _connect_duckdb(store, path) if settings == engine_settings(Limits()) else \
            _connect_duckdb(store, path, settings)
    try:
        for name, (fn, params, ret) in (functions or {}).items():
            con.create_function(name, fn, params, ret, type="arrow", null_handling="special", side_effects=True)
        yield con
    finally:
        for name in functions or {}:
            with contextlib.suppress(Exception):  # never registered (the error is already on its way)
                con.remove_function(name)
        con.close()


def engine_settings(limits: Limits) -> dict[str, Any]:
    """DuckDB settings of a query connection (the limits that DuckDB enforces itself)."""
    out: dict[str, Any] = {}
    if limits.memory_limit is not None:
        out["memory_limit"] = limits.memory_limit
    if limits.threads is not None:
        out["threads"] = limits.threads
    return out


def _quote(text: str) -> str:
    return text.replace("'", "''")


def fetch(con: Any, query: str, limits: Limits, deadline: float | None) -> pa.Table:
    """Run ``query`` on ``con`` within ``limits``: interrupted from a timer thread at the
    ``deadline``, stopped as soon as it returns more rows or bytes than allowed."""
    import duckdb

    left = remaining(deadline, limits)
    timer = None
    if left is not None:
        timer = threading.Timer(left, con.interrupt)
        timer.daemon = True
        timer.start()
    try:
        reader = con.sql(query).to_arrow_reader(min(limits.max_rows or 100_000, 100_000) + 1)
        batches, rows, nbytes = [], 0, 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            nbytes += batch.nbytes
            limits.check_rows(rows)
            limits.check_bytes(nbytes)
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise limits.timed_out() from None
    except duckdb.OutOfMemoryException as exc:
        raise limits.out_of_memory(str(exc).splitlines()[0]) from None
    except duckdb.Error as exc:
        raise InvalidInput(f"SQL error: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise InvalidInput("SQL is nested too deeply to run; flatten the expression") from None
    finally:
        if timer is not None:
            timer.cancel()
    return check_portable(table)


def _connect_duckdb(store: Store, path: str, settings: dict[str, Any] | None = None) -> Any:
    import duckdb

    config = {**(engine_settings(Limits()) if settings is None else settings), "enable_external_access": False, "lock_configuration": True}
    return _with_busy_retry(store, lambda: duckdb.connect(path, read_only=True, config=config))


def _with_busy_retry(store: Store, open_file: Any) -> Any:
    """``open_file()``, retried with backoff while a writer holds the DuckDB catalog
    (and held back while a writer waits for it); StoreBusy after the busy timeout."""
    import time

    import duckdb

    from actdb.store.catalog import busy_error, is_lock_error, yield_to_writer

    deadline = time.monotonic() + store.catalog.busy_timeout
    delay = 0.01
    while True:
        yield_to_writer(store.catalog.intent_file, deadline)
        try:
            return open_file()
        except duckdb.Error as exc:
            if not is_lock_error(exc) or time.monotonic() > deadline:
                if is_lock_error(exc):
                    raise busy_error(exc, str(store.path)) from None
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def sql_with_dissim(db: Any, query: str, *, max_rows: int | None = DEFAULT_MAX_ROWS,
                    timeout: float | None = DEFAULT_TIMEOUT, limits: Limits | None = None) -> pa.Table:
    """Run ``query``; calls of ``dissim(measure, rep_a, rep_b)`` in it are computed lazily.

    Cached values (default parameters, all rows) are looked up inside the database; the
    calls that find none are recorded (and return NULL). Whatever is missing is computed
    in ONE plan (and cached when ``db`` is writable), then the query runs again with the
    values filled in. A fully cached query runs once, on one connection, and calls no
    Python per row. DuckDB: ``dissim`` is a temporary macro over the cached values (an
    Arrow table kept between queries while the ``result`` table is unchanged), whose misses
    reach a Python UDF that records them; PostgreSQL: see :mod:`actdb.query.sql_postgres`.
    The time limit covers the query runs, not the computation of missing values.
    """
    limits = limits or Limits.parse(max_rows=max_rows, timeout=timeout)
    tree = check_select(query, dialect=_dialect(db))
    if not _DISSIM.search(query):
        return run_sql(db, query, limits=limits)
    if db.catalog.dialect == "duckdb":
        return _dissim_duckdb(db, query, limits)
    if db.catalog.dialect == "postgresql":
        from actdb.query.sql_postgres import dissim_postgres

        return dissim_postgres(db, _rewrite_dissim(tree), limits)
    raise InvalidInput(f"dissim() inside SQL needs a DuckDB or PostgreSQL catalog, not {db.catalog.dialect}; "
                       "compute with db.reps(...).compare(...) and read the dissimilarities view")


Request = tuple[str, int, int]


def _defaults() -> list[tuple[str, str, bool]]:
    """(measure, default params hash, symmetric) for every registered measure."""
    from actdb.query.measures import REGISTRY
    from actdb.query.plan import params_hash

    return [(name, params_hash(spec.resolve_params({})), bool(spec.symmetric)) for name, spec in REGISTRY.items()]


def _requests(measure: Any, a: Any, b: Any) -> list[Request]:
    """Non-NULL (measure, rep_a, rep_b) triples of Arrow argument columns."""
    return [(str(m), int(x), int(y)) for m, x, y in zip(measure.to_pylist(), a.to_pylist(), b.to_pylist())
            if m is not None and x is not None and y is not None]


# ------------------------------------------------------------------------ DuckDB
_DUCK_MISSING = "_actdb_dissim_missing"
_UDF_IDS = itertools.count()
_DUCK_VALUES = "_actdb_dissim_value"


def _dissim_duckdb(db: Any, query: str, limits: Limits) -> pa.Table:
    import duckdb

    missing: set[Request] = set()

    def record(measure: Any, a: Any, b: Any) -> Any:  # reached only by calls with no cached value
        missing.update(_requests(measure, a, b))
        return pa.nulls(len(a), pa.float64())

    name = f"{_DUCK_MISSING}_{next(_UDF_IDS)}"  # UDFs are shared by every cursor of a snapshot
    fns = {name: (record, [duckdb.sqltype("VARCHAR"), duckdb.sqltype("BIGINT"), duckdb.sqltype("BIGINT")],
                           duckdb.sqltype("DOUBLE"))}
    with readonly_duckdb(db, fns, limits) as con:
        _install_duckdb_dissim(con, str(db.path), name)
        table = fetch(con, query, limits, limits.deadline())
        if not missing:  # everything was cached: one pass
            return table
    computed = compute_requests(db, set(missing))
    with readonly_duckdb(db, fns, limits) as con:
        _install_duckdb_dissim(con, str(db.path), name, computed)
        return fetch(con, query, limits, limits.deadline())


#: Cached values of at most this many rows are remembered between queries (per store, as
#: Arrow, checked against the result table's state on every query); larger caches are
#: copied into a temporary table inside DuckDB on every query instead.
MEMO_ROWS = 200_000
_memo: dict[str, tuple[tuple[Any, ...], pa.Table]] = {}
_VALUES_SCHEMA = pa.schema([("measure", pa.string()), ("rep_a", pa.int64()), ("rep_b", pa.int64()),
                            ("value", pa.float64())])


def _values_sql(defaults: list[tuple[str, str, bool]]) -> str:
    """The cached default-parameter, all-rows values, both orientations for symmetric measures."""
    rows = ", ".join(f"('{m}', '{h}', {str(s).lower()})" for m, h, s in defaults)
    return f"""
        WITH d(measure, params_hash, both_ways) AS (VALUES {rows}),
             x AS (SELECT r.measure, r.rep_a, r.rep_b, r.value, d.both_ways FROM result r
                   JOIN d ON d.measure = r.measure AND d.params_hash = r.params_hash
                   WHERE r.subset_hash = 'all')
        SELECT measure, rep_a::BIGINT AS rep_a, rep_b::BIGINT AS rep_b, value FROM x
        UNION ALL
        SELECT measure, rep_b, rep_a, value FROM x WHERE both_ways AND rep_a <> rep_b"""


def _install_duckdb_dissim(con: Any, store: str, missing: str, computed: dict[Request, float] | None = None) -> None:
    """The temporary ``dissim`` macro on a read-only connection: a lookup in the cached
    default-parameter values (plus ``computed``), falling back to the recording UDF for
    calls that find nothing. The values come from a per-store memo while the result
    table is unchanged (its row count, newest id and newest write time)."""
    defaults = _defaults()
    count, newest, written = con.execute("SELECT count(*), max(id), max(computed_at) FROM result").fetchall()[0]
    new = None
    if computed:
        new = pa.table({"measure": [k[0] for k in computed], "rep_a": [k[1] for k in computed],
                        "rep_b": [k[2] for k in computed], "value": list(computed.values())}, schema=_VALUES_SCHEMA)
    if 2 * count > MEMO_ROWS:  # a large cache: copied inside DuckDB (plus what was just computed)
        con.execute(f"CREATE TEMP TABLE {_DUCK_VALUES} AS {_values_sql(defaults)}")
        if new is not None:
            con.register("_actdb_dissim_new", new)
            con.execute(f"INSERT INTO {_DUCK_VALUES} SELECT * FROM _actdb_dissim_new")
    else:
        state = (count, newest, written, tuple(defaults))
        hit = _memo.get(store)
        if hit is None or hit[0] != state:
            hit = (state, con.sql(_values_sql(defaults)).to_arrow_table().cast(_VALUES_SCHEMA))
            _memo.clear()  # one store at a time: the memo is for a dashboard repeating its queries
            _memo[store] = hit
        con.register(_DUCK_VALUES, hit[1] if new is None else pa.concat_tables([new, hit[1]]))
    con.execute(f"""
        CREATE TEMP MACRO dissim(_measure, _rep_a, _rep_b) AS coalesce(
            (SELECT first(c.value) FROM {_DUCK_VALUES} c WHERE c.measure = CAST(_measure AS VARCHAR)
                AND c.rep_a = CAST(_rep_a AS BIGINT) AND c.rep_b = CAST(_rep_b AS BIGINT)),
            {missing}(_measure, _rep_a, _rep_b))""")


# -------------------------------------------------------------------- PostgreSQL
_PG_FUNCTION = "actdb_dissim"


def _rewrite_dissim(tree: exp.Expression) -> str:
    """The checked query with each ``dissim(m, a, b)`` call turned into the session's
    ``pg_temp.actdb_dissim(m, a, b)`` (string literals and identifiers are untouched)."""
    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.lower() == "dissim":
            if len(node.expressions) != 3:
                raise InvalidInput(f"dissim() takes 3 arguments (measure, rep_a, rep_b), got {len(node.expressions)}: "
                                   f"{node.sql(dialect='postgres')}")
            return exp.Dot(this=exp.to_identifier("pg_temp"),
                           expression=exp.Anonymous(this=_PG_FUNCTION, expressions=node.expressions))
        return node

    return tree.copy().transform(swap).sql(dialect="postgres")


def compute_requests(db: Any, requests: set[tuple[str, int, int]]) -> dict[tuple[str, int, int], float]:
    """Values of (measure, rep_a, rep_b) requests, computed as one plan per measure."""
    from actdb.errors import NotFound
    from actdb.query.executor import run_plan
    from actdb.query.measures import get_measure
    from actdb.query.plan import Task, row_space
    from actdb.query.selection import list_reps

    if not requests:
        return {}
    reps = {r.rep_id: r for r in list_reps(db)}
    tasks = []
    for measure, a, b in sorted(requests):
        spec = get_measure(measure)
        for rid in (a, b):
            if rid not in reps:
                raise NotFound(f"dissim({measure!r}, {a}, {b}): no complete rep with id {rid}")
        tasks.append(Task(reps[a], reps[b], measure, tuple(sorted(spec.resolve_params({}).items())),
                          row_space(reps[a], reps[b], None, None)))
    result = run_plan(db, tasks)
    return {(t.measure, t.a.rep_id, t.b.rep_id): row["value"] for t, row in zip(tasks, result.rows)}
