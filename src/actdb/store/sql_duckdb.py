"""Read-only SQL on a DuckDB catalog: a locked-down connection, the limits, ``dissim()``.

A query (already validated by the caller) runs on a connection opened read-only with
``enable_external_access = false``, the memory and thread limits set and the
configuration locked, interrupted from a timer thread at the time limit, and stopped as
soon as it returns more rows or bytes than allowed. While the catalog file is unchanged,
repeated queries run on an in-memory copy of it (:mod:`actdb.store.snapshot`). Opening
the file waits out a writer (:func:`actdb.store.busy.retry_while_busy`).

``dissim(measure, rep_a, rep_b)``: a temporary macro over the cached values (an Arrow
table kept between queries while the ``result`` table is unchanged), whose misses reach
a Python UDF that records them. Whatever is missing is computed by the caller
(:class:`~actdb.store.sql_lookup.Lookup`) with the file closed, then the query runs again
with the values filled in. A fully cached query runs once and calls no Python per row.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from actdb.errors import InvalidInput
from actdb.store.busy import retry_while_busy
from actdb.store.snapshot import SNAPSHOTS
from actdb.store.sql_limits import Limits, check_portable, remaining
from actdb.store.sql_lookup import Default, Lookup, Request

if TYPE_CHECKING:
    from actdb.store.store import Store

T = TypeVar("T")
#: name -> (function, parameter types, return type): vectorised Arrow UDFs of one query.
Functions = dict[str, tuple[Callable[..., Any], list[Any], Any]]


def run(store: Store, query: str, limits: Limits, lookup: Lookup | None = None) -> pa.Table:
    """One validated SELECT on the store's DuckDB catalog, within ``limits``."""
    if lookup is not None:
        return _run_with_lookup(store, query, limits, lookup)
    with readonly_duckdb(store, limits) as con:
        return fetch(con, query, limits, limits.deadline())


@contextlib.contextmanager
def readonly_duckdb(store: Store, limits: Limits | None = None, functions: Functions | None = None) -> Iterator[Any]:
    """A read-only DuckDB connection on the catalog with file and network access off, the
    memory and thread limits set and the configuration locked; ``functions`` are
    registered first as vectorised Arrow UDFs. While the catalog file is unchanged,
    repeated queries run on an in-memory copy of it (one copy per memory/thread setting)."""
    settings = engine_settings(limits or Limits())
    path = str(store.path / "catalog.duckdb")
    con = SNAPSHOTS.cursor(path, lambda mem, p: _with_busy_retry(
        store, lambda: mem.execute(f"ATTACH '{_quote(p)}' AS src (READ_ONLY)")), settings)
    if con is None:
        con = connect(store, path, settings)
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


def connect(store: Store, path: str, settings: dict[str, Any]) -> Any:
    """The catalog file ``path`` opened read-only, external access off, ``settings`` set
    and the configuration locked (waiting out a writer)."""
    import duckdb

    config = {**settings, "enable_external_access": False, "lock_configuration": True}
    return _with_busy_retry(store, lambda: duckdb.connect(path, read_only=True, config=config))


def _with_busy_retry(store: Store, open_file: Callable[[], T]) -> T:
    """``open_file()``, retried while a writer holds the DuckDB catalog (and held back while
    a writer waits for it); StoreBusy after the store's busy timeout."""
    return retry_while_busy(open_file, timeout=store.catalog.busy_timeout, where=str(store.path),
                            intent_file=store.catalog.intent_file)


# ------------------------------------------------------------------------ dissim()
_MISSING = "_actdb_dissim_missing"
_UDF_IDS = itertools.count()
_VALUES = "_actdb_dissim_value"


def _requests(measure: Any, a: Any, b: Any) -> list[Request]:
    """Non-NULL (measure, rep_a, rep_b) triples of Arrow argument columns."""
    return [(str(m), int(x), int(y)) for m, x, y in zip(measure.to_pylist(), a.to_pylist(), b.to_pylist())
            if m is not None and x is not None and y is not None]


def _run_with_lookup(store: Store, query: str, limits: Limits, lookup: Lookup) -> pa.Table:
    import duckdb

    missing: set[Request] = set()

    def record(measure: Any, a: Any, b: Any) -> Any:  # reached only by calls with no cached value
        missing.update(_requests(measure, a, b))
        return pa.nulls(len(a), pa.float64())

    name = f"{_MISSING}_{next(_UDF_IDS)}"  # UDFs are shared by every cursor of a snapshot
    fns: Functions = {name: (record, [duckdb.sqltype("VARCHAR"), duckdb.sqltype("BIGINT"),
                                      duckdb.sqltype("BIGINT")], duckdb.sqltype("DOUBLE"))}
    defaults = list(lookup.defaults())
    with readonly_duckdb(store, limits, fns) as con:
        _install_lookup(con, str(store.path), name, defaults)
        table = fetch(con, query, limits, limits.deadline())
        if not missing:  # everything was cached: one pass
            return table
    computed = lookup.compute(set(missing))
    with readonly_duckdb(store, limits, fns) as con:
        _install_lookup(con, str(store.path), name, defaults, computed)
        return fetch(con, query, limits, limits.deadline())


#: Cached values of at most this many rows are remembered between queries (per store, as
#: Arrow, checked against the result table's state on every query); larger caches are
#: copied into a temporary table inside DuckDB on every query instead.
MEMO_ROWS = 200_000
_memo: dict[str, tuple[tuple[Any, ...], pa.Table]] = {}
_VALUES_SCHEMA = pa.schema([("measure", pa.string()), ("rep_a", pa.int64()), ("rep_b", pa.int64()),
                            ("value", pa.float64())])


def _values_sql(defaults: list[Default]) -> str:
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


def _install_lookup(con: Any, store: str, missing: str, defaults: list[Default],
                    computed: dict[Request, float] | None = None) -> None:
    """The temporary ``dissim`` macro on a read-only connection: a lookup in the cached
    default-parameter values (plus ``computed``), falling back to the recording UDF for
    calls that find nothing. The values come from a per-store memo while the result
    table is unchanged (its row count, newest id and newest write time)."""
    count, newest, written = con.execute("SELECT count(*), max(id), max(computed_at) FROM result").fetchall()[0]
    new = None
    if computed:
        new = pa.table({"measure": [k[0] for k in computed], "rep_a": [k[1] for k in computed],
                        "rep_b": [k[2] for k in computed], "value": list(computed.values())}, schema=_VALUES_SCHEMA)
    if 2 * count > MEMO_ROWS:  # a large cache: copied inside DuckDB (plus what was just computed)
        con.execute(f"CREATE TEMP TABLE {_VALUES} AS {_values_sql(defaults)}")
        if new is not None:
            con.register("_actdb_dissim_new", new)
            con.execute(f"INSERT INTO {_VALUES} SELECT * FROM _actdb_dissim_new")
    else:
        state = (count, newest, written, tuple(defaults))
        hit = _memo.get(store)
        if hit is None or hit[0] != state:
            hit = (state, con.sql(_values_sql(defaults)).to_arrow_table().cast(_VALUES_SCHEMA))
            _memo.clear()  # one store at a time: the memo is for a dashboard repeating its queries
            _memo[store] = hit
        con.register(_VALUES, hit[1] if new is None else pa.concat_tables([new, hit[1]]))
    con.execute(f"""
        CREATE TEMP MACRO dissim(_measure, _rep_a, _rep_b) AS coalesce(
            (SELECT first(c.value) FROM {_VALUES} c WHERE c.measure = CAST(_measure AS VARCHAR)
                AND c.rep_a = CAST(_rep_a AS BIGINT) AND c.rep_b = CAST(_rep_b AS BIGINT)),
            {missing}(_measure, _rep_a, _rep_b))""")
