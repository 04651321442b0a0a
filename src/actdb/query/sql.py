"""Read-only SQL over the catalog views.

``run_sql`` accepts one SELECT (or WITH ... SELECT) statement and runs it on a
connection that cannot write or touch files: a DuckDB connection opened read-only with
``enable_external_access = false`` and the configuration locked, or a PostgreSQL
transaction ``READ ONLY`` with a statement timeout. Statements are checked with sqlglot
first, so a hostile query is refused with a clear message before it reaches the engine.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
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
    """Parse ``query`` and refuse anything but a single read-only SELECT.

    Verdicts are remembered per (query, dialect) (a dashboard repeats its queries), so
    the returned tree is shared: copy it before changing it."""
    if not isinstance(query, str) or not query.strip():
        raise UnsafeQuery("empty SQL; give one SELECT statement")
    return _checked(query, dialect)


@functools.lru_cache(maxsize=256)
def _checked(query: str, dialect: str) -> exp.Expression:
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
    registered first as vectorised Arrow UDFs. While the catalog file is unchanged,
    repeated queries run on an in-memory copy of it (:mod:`actdb.query.snapshot`)."""
    from actdb.query.snapshot import SNAPSHOTS

    path = str(store.path / "catalog.duckdb")
    con = SNAPSHOTS.cursor(path, lambda mem, p: _with_busy_retry(
        store, lambda: mem.execute(f"ATTACH '{_quote(p)}' AS src (READ_ONLY)")))
    if con is None:
        con = _connect_duckdb(store, path)
    try:
        for name, (fn, params, ret) in (functions or {}).items():
            con.create_function(name, fn, params, ret, type="arrow", null_handling="special", side_effects=True)
        yield con
    finally:
        for name in functions or {}:
            with contextlib.suppress(Exception):  # never registered (the error is already on its way)
                con.remove_function(name)
        con.close()


def _quote(text: str) -> str:
    return text.replace("'", "''")


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
    import duckdb

    return _with_busy_retry(store, lambda: duckdb.connect(
        path, read_only=True, config={"enable_external_access": False, "lock_configuration": True}))


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

    Cached values (default parameters, all rows) are looked up inside the database; the
    calls that find none are recorded (and return NULL). Whatever is missing is computed
    in ONE plan (and cached), then the query runs again with the values filled in. A
    fully cached query runs once, on one connection, and calls no Python per row.
    DuckDB: ``dissim`` is a temporary macro over the cached values (an Arrow table kept
    between queries while the ``result`` table is unchanged), whose misses reach a Python
    UDF that records them; PostgreSQL: the calls are rewritten to a PL/pgSQL function in ``pg_temp`` that looks
    the values up in ``result`` and records misses in a temporary table (temporary tables
    are writable inside the READ ONLY transaction the query runs in).
    """
    dialect = "postgres" if db.catalog.dialect == "postgresql" else "duckdb"
    tree = check_select(query, dialect=dialect)
    if not _DISSIM.search(query):
        return run_sql(db, query, max_rows=max_rows, timeout=timeout)
    if db.catalog.dialect == "duckdb":
        return _dissim_duckdb(db, query, max_rows, timeout)
    if db.catalog.dialect == "postgresql":
        return _dissim_postgres(db, _rewrite_dissim(tree), max_rows, timeout)
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


def _dissim_duckdb(db: Any, query: str, max_rows: int | None, timeout: float | None) -> pa.Table:
    import duckdb

    missing: set[Request] = set()

    def record(measure: Any, a: Any, b: Any) -> Any:  # reached only by calls with no cached value
        missing.update(_requests(measure, a, b))
        return pa.nulls(len(a), pa.float64())

    name = f"{_DUCK_MISSING}_{next(_UDF_IDS)}"  # UDFs are shared by every cursor of a snapshot
    fns = {name: (record, [duckdb.sqltype("VARCHAR"), duckdb.sqltype("BIGINT"), duckdb.sqltype("BIGINT")],
                           duckdb.sqltype("DOUBLE"))}
    with readonly_duckdb(db, fns) as con:
        _install_duckdb_dissim(con, str(db.path), name)
        table = fetch(con, query, max_rows, timeout)
        if not missing:  # everything was cached: one pass
            return table
    computed = compute_requests(db, set(missing))
    with readonly_duckdb(db, fns) as con:
        _install_duckdb_dissim(con, str(db.path), name, computed)
        return fetch(con, query, max_rows, timeout)


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


def _pg_setup_sql(schema: str) -> list[str]:
    q = '"' + schema.replace('"', '""') + '"'
    return [
        "CREATE TEMP TABLE IF NOT EXISTS actdb_dissim_default "
        "(measure text PRIMARY KEY, params_hash text NOT NULL, is_symmetric boolean NOT NULL)",
        "CREATE TEMP TABLE IF NOT EXISTS actdb_dissim_value "
        "(measure text, rep_a bigint, rep_b bigint, value double precision, PRIMARY KEY (measure, rep_a, rep_b))",
        "CREATE TEMP TABLE IF NOT EXISTS actdb_dissim_request "
        "(measure text, rep_a bigint, rep_b bigint, PRIMARY KEY (measure, rep_a, rep_b))",
        f"""CREATE OR REPLACE FUNCTION pg_temp.{_PG_FUNCTION}(_measure text, _rep_a bigint, _rep_b bigint)
        RETURNS double precision LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE v double precision; h text; sym boolean;
        BEGIN
          IF _measure IS NULL OR _rep_a IS NULL OR _rep_b IS NULL THEN RETURN NULL; END IF;
          SELECT c.value INTO v FROM pg_temp.actdb_dissim_value c
           WHERE c.measure = _measure AND c.rep_a = _rep_a AND c.rep_b = _rep_b;
          IF FOUND THEN RETURN v; END IF;
          SELECT d.params_hash, d.is_symmetric INTO h, sym FROM pg_temp.actdb_dissim_default d WHERE d.measure = _measure;
          IF FOUND THEN
            SELECT x.value INTO v FROM {q}.result x WHERE x.measure = _measure AND x.params_hash = h
               AND x.rep_a = _rep_a AND x.rep_b = _rep_b AND x.subset_hash = 'all';
            IF FOUND THEN RETURN v; END IF;
            IF sym THEN
              SELECT x.value INTO v FROM {q}.result x WHERE x.measure = _measure AND x.params_hash = h
                 AND x.rep_a = _rep_b AND x.rep_b = _rep_a AND x.subset_hash = 'all';
              IF FOUND THEN RETURN v; END IF;
            END IF;
          END IF;
          INSERT INTO pg_temp.actdb_dissim_request VALUES (_measure, _rep_a, _rep_b) ON CONFLICT DO NOTHING;
          RETURN NULL;
        END $fn$""",
    ]


def _dissim_postgres(db: Any, query: str, max_rows: int | None, timeout: float | None) -> pa.Table:
    import psycopg

    with db.catalog.engine.connect() as conn:
        raw = conn.connection.driver_connection  # plain psycopg: no read-only "begin" hook on setup
        try:
            schema = raw.execute("SELECT current_schema()").fetchone()[0]
            for statement in _pg_setup_sql(schema):
                raw.execute(statement)
            with raw.cursor() as cur:
                cur.executemany("INSERT INTO actdb_dissim_default VALUES (%s, %s, %s)", _defaults())
            raw.commit()
        except psycopg.Error as exc:
            raw.rollback()
            raise InvalidInput(f"dissim() needs temporary tables and functions on the PostgreSQL catalog "
                               f"(privilege TEMP), which failed: {str(exc).splitlines()[0]}") from None
        table, requests = _pg_fetch(raw, query, max_rows, timeout)
        if not requests:
            return table
        computed = compute_requests(db, requests)
        with raw.cursor() as cur:
            cur.executemany("INSERT INTO actdb_dissim_value VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            [(*k, float(v)) for k, v in computed.items()])
        raw.commit()
        table, _ = _pg_fetch(raw, query, max_rows, timeout)
        return table


def _pg_fetch(raw: Any, query: str, max_rows: int | None, timeout: float | None) -> tuple[pa.Table, set[Request]]:
    """Run ``query`` in a READ ONLY transaction on a psycopg connection; return its rows and
    the dissim() requests it recorded (the recording is rolled back with the transaction)."""
    import psycopg

    try:
        raw.execute("SET TRANSACTION READ ONLY")
        if timeout:
            raw.execute(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
        with raw.cursor() as cur:
            cur.execute(query)
            cols = [c.name for c in cur.description or []]
            rows = cur.fetchmany((max_rows or 10**9) + 1)
        requests = {(str(m), int(a), int(b)) for m, a, b in
                    raw.execute("SELECT measure, rep_a, rep_b FROM actdb_dissim_request").fetchall()}
    except psycopg.Error as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "statement timeout" in msg:
            raise InvalidInput(f"query ran longer than the {timeout:g} s time limit and was stopped") from None
        raise InvalidInput(f"SQL error: {msg}") from None
    finally:
        raw.rollback()
    data = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    return _limit(pa.table(data) if cols else pa.table({}), max_rows), requests


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
