"""Read-only SQL on a PostgreSQL catalog: a READ ONLY transaction as the store's reader role.

Every query runs on its own connection in one transaction that starts with ``SET
TRANSACTION READ ONLY``, ``SET LOCAL ROLE actdb_reader_<schema>`` (:mod:`actdb.store.reader`:
SELECT on the store's views and nothing else), ``search_path`` pinned to the store's
schema, ``statement_timeout`` (the time limit) and ``work_mem`` (the memory per sort or
hash), and is rolled back afterwards. So a query the validator wrongly let through still
cannot write, read raw tables, other schemas or server files, or run past the time limit.

``dissim()``: the calls are rewritten (through the parsed query) to a PL/pgSQL function
in ``pg_temp`` that looks the values up in the ``results`` view and records misses in a
temporary table (temporary tables are writable inside a READ ONLY transaction); the
temporary objects are made before the transaction, by the session user, and granted to
the reader role.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from actdb.errors import InvalidInput
from actdb.query.sqllimits import PG_WORK_MEM, Limits, check_portable, remaining

Request = tuple[str, int, int]
_PG_FUNCTION = "actdb_dissim"
_TEMP_TABLES = ("actdb_dissim_default", "actdb_dissim_value", "actdb_dissim_request")
#: (catalog url, schema) pairs whose reader role was found in place by this process.
_READY: set[tuple[str, str]] = set()


def _views() -> list[str]:
    from actdb.query.sqlguard import VIEWS

    return sorted(VIEWS)


def _prepare(store: Any, raw: Any) -> tuple[str, str]:
    """(schema, reader role) of the connection, the role set up on first use in this process."""
    from actdb.store.reader import ensure_reader, reader_role

    schema = raw.execute("SELECT current_schema()").fetchone()[0]
    raw.rollback()
    if schema is None:
        raise InvalidInput("the PostgreSQL catalog has no current schema (search_path names none that exists); "
                           "check the catalog URL")
    key = (store.catalog.url, schema)
    if key not in _READY:
        ensure_reader(raw, schema, _views())
        _READY.add(key)
    return schema, reader_role(schema)


def _begin(raw: Any, schema: str, role: str, limits: Limits, deadline: float | None) -> None:
    """Open the query transaction: read-only, as the reader role, schema pinned, limits set."""
    from actdb.store.reader import ident

    left = remaining(deadline, limits)
    timeout_ms = 0 if left is None else max(1, int(left * 1000))
    raw.execute(f"SET TRANSACTION READ ONLY; SET LOCAL ROLE {ident(role)}; "
                f"SET LOCAL search_path = {ident(schema)}; SET LOCAL statement_timeout = {timeout_ms}; "
                f"SET LOCAL work_mem = '{PG_WORK_MEM}'")


def _fetch(store: Any, raw: Any, query: str, limits: Limits, deadline: float | None,
           dissim: bool = False) -> tuple[pa.Table, set[Request]]:
    """Run ``query`` in a query transaction; return its rows and the dissim() requests it
    recorded (the recording is rolled back with the transaction). A view whose grant was
    lost (a migration recreated it) is granted again once."""
    import psycopg

    for attempt in range(2):
        schema, role = _prepare(store, raw)
        try:
            _begin(raw, schema, role, limits, deadline)
            with raw.cursor() as cur:
                cur.execute(query)
                cols = [c.name for c in cur.description or []]
                rows: list[Any] = []
                while True:
                    chunk = cur.fetchmany(10_000)
                    if not chunk:
                        break
                    rows.extend(chunk)
                    limits.check_rows(len(rows))
            requests: set[Request] = set()
            if dissim:
                requests = {(str(m), int(a), int(b)) for m, a, b in
                            raw.execute("SELECT measure, rep_a, rep_b FROM actdb_dissim_request").fetchall()}
            break
        except psycopg.errors.InsufficientPrivilege as exc:
            raw.rollback()
            _READY.discard((store.catalog.url, schema))
            if attempt:
                raise InvalidInput(f"SQL error: {str(exc).splitlines()[0]} (the query runs as role {role!r}, "
                                   "which reads the catalog views only)") from None
        except psycopg.errors.QueryCanceled:
            raise limits.timed_out() from None
        except psycopg.errors.OutOfMemory as exc:
            raise limits.out_of_memory(str(exc).splitlines()[0]) from None
        except psycopg.Error as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InvalidInput(f"SQL error: {msg}") from None
        finally:
            raw.rollback()
    table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}) if cols else pa.table({})
    limits.check_bytes(table.nbytes)
    return check_portable(table), requests


def run_postgres(store: Any, query: str, limits: Limits) -> pa.Table:
    """One checked SELECT on a PostgreSQL catalog, within ``limits``."""
    with store.catalog.engine.connect() as conn:
        raw = conn.connection.driver_connection  # plain psycopg: no read-only "begin" hook
        raw.rollback()
        return _fetch(store, raw, query, limits, limits.deadline())[0]


def _setup_sql(schema: str) -> list[str]:
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
            SELECT x.value INTO v FROM {q}.results x WHERE x.measure = _measure AND x.params_hash = h
               AND x.rep_a = _rep_a AND x.rep_b = _rep_b AND x.subset_hash = 'all';
            IF FOUND THEN RETURN v; END IF;
            IF sym THEN
              SELECT x.value INTO v FROM {q}.results x WHERE x.measure = _measure AND x.params_hash = h
                 AND x.rep_a = _rep_b AND x.rep_b = _rep_a AND x.subset_hash = 'all';
              IF FOUND THEN RETURN v; END IF;
            END IF;
          END IF;
          INSERT INTO pg_temp.actdb_dissim_request VALUES (_measure, _rep_a, _rep_b) ON CONFLICT DO NOTHING;
          RETURN NULL;
        END $fn$""",
    ]



def dissim_postgres(db: Any, query: str, limits: Limits) -> pa.Table:
    """A checked SELECT whose dissim() calls were rewritten to ``pg_temp.actdb_dissim``."""
    import psycopg

    from actdb.query.sql import _defaults, compute_requests
    from actdb.store.reader import ident

    with db.catalog.engine.connect() as conn:
        raw = conn.connection.driver_connection  # plain psycopg: no read-only "begin" hook on setup
        raw.rollback()
        schema, role = _prepare(db, raw)
        try:
            for statement in _setup_sql(schema):
                raw.execute(statement)
            with raw.cursor() as cur:
                cur.executemany("INSERT INTO actdb_dissim_default VALUES (%s, %s, %s)", _defaults())
            raw.execute(f"GRANT SELECT, INSERT ON {', '.join(_TEMP_TABLES)} TO {ident(role)}")
            raw.commit()
        except psycopg.Error as exc:
            raw.rollback()
            raise InvalidInput(f"dissim() needs temporary tables and functions on the PostgreSQL catalog "
                               f"(privilege TEMP), which failed: {str(exc).splitlines()[0]}") from None
        table, requests = _fetch(db, raw, query, limits, limits.deadline(), dissim=True)
        if not requests:
            return table
        computed = compute_requests(db, requests)
        with raw.cursor() as cur:
            cur.executemany("INSERT INTO actdb_dissim_value VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            [(*k, float(v)) for k, v in computed.items()])
        raw.commit()
        return _fetch(db, raw, query, limits, limits.deadline(), dissim=True)[0]
