"""Read-only SQL over the catalog views.

``run_sql`` accepts one SELECT (or WITH ... SELECT) statement and runs it on a
connection that cannot write or touch files: a DuckDB connection opened read-only with
``enable_external_access = false`` and the configuration locked, or a PostgreSQL
transaction ``READ ONLY`` with a statement timeout. Statements are checked with sqlglot
first, so a hostile query is refused with a clear message before it reaches the engine.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlglot
import sqlglot.expressions as exp

from actdb.errors import InvalidInput, UnsafeQuery

if TYPE_CHECKING:
    from actdb.store.store import Store

DEFAULT_MAX_ROWS = 1_000_000
_DISSIM = re.compile(r"\bdissim\s*\(", re.IGNORECASE)
_FORBIDDEN_FUNCS = {
    "read_csv", "read_csv_auto", "read_parquet", "read_json", "read_json_auto", "read_text", "read_blob",
    "parquet_scan", "glob", "sniff_csv", "read_ndjson", "read_ndjson_auto", "pg_read_file",
    "pg_read_binary_file", "pg_ls_dir", "lo_import", "lo_export", "query", "query_table", "getenv",
    "current_setting", "set_config", "pg_sleep", "dblink", "system", "duckdb_secrets", "load", "install",
}
# whole families of table functions that read files or settings (DuckDB's list grows with
# each release and extension; the connection's enable_external_access=false backs this up)
_FORBIDDEN_PREFIXES = ("read_", "parquet_", "sqlite_", "postgres_", "mysql_", "iceberg_", "delta_", "pg_read",
                       "pg_ls", "pg_stat_file", "lo_", "duckdb_secret", "duckdb_settings", "duckdb_extensions",
                       "which_secret", "load_extension", "json_execute")
_ALLOWED_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.With, exp.Subquery)


def check_select(query: str, *, dialect: str = "duckdb") -> exp.Expression:
    """Parse ``query`` and refuse anything but a single read-only SELECT."""
    if not isinstance(query, str) or not query.strip():
        raise UnsafeQuery("empty SQL; give one SELECT statement")
    try:
        statements = [s for s in sqlglot.parse(query, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise InvalidInput(f"SQL does not parse: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise UnsafeQuery(f"{len(statements)} statements given; actdb SQL runs exactly one SELECT")
    tree = statements[0]
    if not isinstance(tree, _ALLOWED_ROOTS):
        raise UnsafeQuery(f"only SELECT queries are allowed, not {tree.key.upper()}; the catalog is read-only here")
    for node in tree.walk():
        if isinstance(node, (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter, exp.Command,
                             exp.Copy, exp.Pragma, exp.Set, exp.Use, exp.Attach, exp.Detach, exp.Into)):
            raise UnsafeQuery(f"{node.key.upper()} is not allowed in a read-only query")
        if isinstance(node, (exp.Anonymous, exp.Func)):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name in _FORBIDDEN_FUNCS or name.startswith(_FORBIDDEN_PREFIXES) or name.endswith("_scan"):
                raise UnsafeQuery(f"function {name}() is not allowed: queries cannot read files or settings")
        if isinstance(node, exp.Table) and (node.args.get("catalog") or _looks_like_file(node.name)):
            raise UnsafeQuery(f"table {node.sql()!r} is not allowed: query the catalog views "
                              "(models, checkpoints, datasets, examples, tokens, reps, results, dissimilarities)")
    return tree


def _looks_like_file(name: str) -> bool:
    return any(c in name for c in "/\\") or name.lower().endswith((".csv", ".parquet", ".json", ".duckdb", ".db"))


def run_sql(store: Store, query: str, *, max_rows: int | None = DEFAULT_MAX_ROWS,
            timeout: float | None = None, functions: dict[str, Any] | None = None) -> pa.Table:
    """Run one read-only SELECT over the catalog; return an Arrow table.

    More than ``max_rows`` rows is an error (not a silent cut); a query running longer
    than ``timeout`` seconds is interrupted.
    """
    dialect = "postgres" if store.catalog.dialect == "postgresql" else "duckdb"
    check_select(query, dialect=dialect)
    if store.catalog.dialect == "duckdb":
        return _duckdb(store, query, max_rows, timeout, functions or {})
    return _postgres(store, query, max_rows, timeout)


def _limit(table: pa.Table, max_rows: int | None) -> pa.Table:
    if max_rows is not None and table.num_rows > max_rows:
        raise InvalidInput(f"query returned more than {max_rows} rows; add a LIMIT or a WHERE clause")
    return table


def _duckdb(store: Store, query: str, max_rows: int | None, timeout: float | None,
            functions: dict[str, Any]) -> pa.Table:
    with readonly_duckdb(store, functions) as con:
        return fetch(con, query, max_rows, timeout)


@contextlib.contextmanager
def readonly_duckdb(store: Store, functions: dict[str, Any] | None = None) -> Iterator[Any]:
    """A read-only DuckDB connection on the catalog with file and network access off and
    the configuration locked; ``functions`` (name -> (fn, param types, return type)) are
    registered first as vectorised Arrow UDFs."""
    con = _connect_duckdb(store, str(store.path / "catalog.duckdb"))
    try:
        for name, (fn, params, ret) in (functions or {}).items():
            con.create_function(name, fn, params, ret, type="arrow", null_handling="special", side_effects=True)
        yield con
    finally:
        con.close()


def fetch(con: Any, query: str, max_rows: int | None, timeout: float | None) -> pa.Table:
    """Run ``query`` on ``con`` with a row limit and a time limit (interrupting it)."""
    import duckdb

    timer = None
    if timeout:
        timer = threading.Timer(timeout, con.interrupt)
        timer.start()
    try:
        reader = con.sql(query).to_arrow_reader(min(max_rows or 100_000, 100_000) + 1)
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if max_rows is not None and rows > max_rows:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise InvalidInput(f"query ran longer than the {timeout:g} s time limit and was stopped") from None
    except duckdb.Error as exc:
        raise InvalidInput(f"SQL error: {str(exc).splitlines()[0]}") from None
    finally:
        if timer is not None:
            timer.cancel()
    return _limit(table, max_rows)


def _connect_duckdb(store: Store, path: str) -> Any:
    import time

    import duckdb

    from actdb.store.catalog import busy_error, is_lock_error, yield_to_writer

    deadline = time.monotonic() + store.catalog.busy_timeout
    delay = 0.01
    while True:
        yield_to_writer(store.catalog.intent_file, deadline)
        try:
            return duckdb.connect(path, read_only=True,
                                  config={"enable_external_access": False, "lock_configuration": True})
        except duckdb.Error as exc:
            if not is_lock_error(exc) or time.monotonic() > deadline:
                if is_lock_error(exc):
                    raise busy_error(exc, str(store.path)) from None
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _postgres(store: Store, query: str, max_rows: int | None, timeout: float | None) -> pa.Table:
    import sqlalchemy as sa

    with store.catalog.engine.connect() as conn:
        with conn.begin():
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            if timeout:
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
            try:
                result = conn.exec_driver_sql(query)
                cols = list(result.keys())
                rows = result.fetchmany((max_rows or 10**9) + 1)
            except sa.exc.DBAPIError as exc:
                msg = str(exc.orig).splitlines()[0]
                if "statement timeout" in msg:
                    raise InvalidInput(f"query ran longer than the {timeout:g} s time limit and was stopped") from None
                raise InvalidInput(f"SQL error: {msg}") from None
    data = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    return _limit(pa.table(data) if cols else pa.table({}), max_rows)


def sql_with_dissim(db: Any, query: str, *, max_rows: int | None = DEFAULT_MAX_ROWS,
                    timeout: float | None = None) -> pa.Table:
    """Run ``query``; calls of ``dissim(measure, rep_a, rep_b)`` in it are computed lazily.

    The query first runs with a ``dissim`` that only records what is asked (returning
    NULL); the requested values are looked up in the results cache on the same
    connection; whatever is missing is computed in ONE plan (and cached); then the query
    runs again with the values filled in. A fully cached query opens the catalog once.
    """
    check_select(query, dialect="postgres" if db.catalog.dialect == "postgresql" else "duckdb")
    if not _DISSIM.search(query):
        return run_sql(db, query, max_rows=max_rows, timeout=timeout)
    if db.catalog.dialect != "duckdb":
        raise InvalidInput("dissim() inside SQL needs the DuckDB catalog; with PostgreSQL, compute with "
                           "db.reps(...).compare(...) and read the results from the dissimilarities view")
    import duckdb

    missing: set[tuple[str, int, int]] = set()
    values: dict[tuple[str, int, int], float] = {}

    def dissim(measure: Any, a: Any, b: Any) -> Any:
        out = []
        for m, x, y in zip(measure.to_pylist(), a.to_pylist(), b.to_pylist()):
            if m is None or x is None or y is None:
                out.append(None)
                continue
            key = (str(m), int(x), int(y))
            if key not in values:
                missing.add(key)
            out.append(values.get(key))
        return pa.array(out, pa.float64())

    fns = {"dissim": (dissim, [duckdb.sqltype("VARCHAR"), duckdb.sqltype("BIGINT"), duckdb.sqltype("BIGINT")],
                      duckdb.sqltype("DOUBLE"))}
    with readonly_duckdb(db, fns) as con:
        values.update(_cached(con))
        table = fetch(con, query, max_rows if not missing else None, timeout)
        if not missing:  # everything was cached: one pass
            return table
    values.update(compute_requests(db, set(missing)))
    missing.clear()
    with readonly_duckdb(db, fns) as con:
        return fetch(con, query, max_rows, timeout)


PREFETCH_LIMIT = 200_000


def _cached(con: Any) -> dict[tuple[str, int, int], float]:
    """Default-parameter, all-rows values of the results cache, by (measure, a, b), both
    orientations for symmetric measures (empty when the cache is too large to prefetch:
    then every value is computed or looked up by the plan)."""
    from actdb.query.measures import REGISTRY
    from actdb.query.plan import params_hash

    if con.execute("SELECT count(*) FROM result WHERE subset_hash = 'all'").fetchone()[0] > PREFETCH_LIMIT:
        return {}
    defaults = {name: (params_hash(spec.resolve_params({})), spec.symmetric) for name, spec in REGISTRY.items()}
    out = {}
    for m, ph, a, b, v in con.execute(
            "SELECT measure, params_hash, rep_a, rep_b, value FROM result WHERE subset_hash = 'all'").fetchall():
        default = defaults.get(m)
        if default is None or default[0] != ph:
            continue
        out[(m, a, b)] = v
        if default[1]:
            out[(m, b, a)] = v
    return out


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
