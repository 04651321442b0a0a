"""Read-only SQL on a PostgreSQL catalog: a READ ONLY transaction as the store's reader role.

Every query runs on its own connection in one transaction that starts with ``SET
TRANSACTION READ ONLY``, ``SET LOCAL ROLE actdb_reader_<schema>``, ``search_path`` pinned
to the store's schema, ``statement_timeout`` (the time limit) and ``work_mem`` (the memory
per sort or hash), and is rolled back afterwards. So a query the validator wrongly let
through still cannot write, read raw tables, other schemas or server files, or run past
the time limit.

The reader role is a NOLOGIN role with USAGE on the store's schema and SELECT on its
views, and no other grant; what every role may read (``PUBLIC`` grants such as
``pg_settings``) stays readable. It is created and granted on first use by a user who may
(the store's owner with CREATEROLE, or a superuser). Where that user may not,
:func:`grant_sql` is what a DBA runs. A view that a later schema revision recreates loses
its grant; the next query notices (:func:`ensure_reader` checks every view) and grants it
again.

``dissim()``: the calls are rewritten (:meth:`~actdb.store.sql_lookup.Lookup.rewrite`) to
a PL/pgSQL function in ``pg_temp`` that looks the values up in the ``results`` view and
records misses in a temporary table (temporary tables are writable inside a READ ONLY
transaction); the temporary objects are made before the transaction, by the session
user, and granted to the reader role.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from actdb.errors import InvalidInput
from actdb.store.sql_limits import PG_WORK_MEM, Limits, check_portable, remaining
from actdb.store.sql_lookup import Lookup, Request

if TYPE_CHECKING:
    from actdb.store.store import Store

_FUNCTION = "actdb_dissim"
_TEMP_TABLES = ("actdb_dissim_default", "actdb_dissim_value", "actdb_dissim_request")
#: (catalog url, schema) pairs whose reader role was found in place by this process.
_READY: set[tuple[str, str]] = set()


def run(store: Store, query: str, limits: Limits, lookup: Lookup | None = None) -> pa.Table:
    """One validated SELECT on the store's PostgreSQL catalog, within ``limits``."""
    if lookup is not None:
        return _run_with_lookup(store, lookup.rewrite(f"pg_temp.{_FUNCTION}"), limits, lookup)
    with store.catalog.engine.connect() as conn:
        raw: Any = conn.connection.driver_connection  # plain psycopg: no read-only "begin" hook
        raw.rollback()
        return _fetch(store, raw, query, limits, limits.deadline())[0]


# ------------------------------------------------------------------ the reader role
_MAX_NAME = 63  # PostgreSQL identifiers are at most 63 bytes


def reader_role(schema: str) -> str:
    """The reader role of a schema: ``actdb_reader_<schema>`` (hashed when too long)."""
    name = f"actdb_reader_{schema}"
    if len(name.encode()) <= _MAX_NAME:
        return name
    return "actdb_reader_" + hashlib.sha256(schema.encode()).hexdigest()[:24]


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def grant_sql(schema: str, views: list[str], member: str = "<user>") -> list[str]:
    """The statements that set up the reader role of ``schema`` (what a DBA runs)."""
    role, s = ident(reader_role(schema)), ident(schema)
    return [f"CREATE ROLE {role} NOLOGIN",
            f"GRANT USAGE ON SCHEMA {s} TO {role}",
            f"GRANT SELECT ON {', '.join(f'{s}.{ident(v)}' for v in sorted(views))} TO {role}",
            f"GRANT {role} TO {member}"]


def _missing(raw: Any, schema: str, role: str, views: list[str]) -> tuple[bool, list[str], bool, bool]:
    """(role exists, views without its SELECT grant, schema USAGE granted, current user may SET ROLE)."""
    present = [r[0] for r in raw.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('v', 'm') AND c.relname = ANY(%s)", (schema, views)).fetchall()]
    if raw.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
        return False, present, False, False
    ungranted = [v for v in present if not raw.execute(
        "SELECT has_table_privilege(%s, %s, 'SELECT')", (role, f"{ident(schema)}.{ident(v)}")).fetchone()[0]]
    usage = raw.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (role, schema)).fetchone()[0]
    member = raw.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (role,)).fetchone()[0]
    return True, ungranted, bool(usage), bool(member)


def ensure_reader(raw: Any, schema: str, views: list[str]) -> str:
    """Make sure the reader role of ``schema`` exists, reads its ``views`` and can be taken
    by the current user; return its name. ``raw`` is a psycopg connection outside a
    transaction; what this does is committed (nothing when all is in place)."""
    import psycopg

    role = reader_role(schema)
    for attempt in range(2):  # a concurrent first use may create the role or a grant meanwhile
        try:
            exists, ungranted, usage, member = _missing(raw, schema, role, views)
            if exists and not ungranted and usage and member:
                raw.rollback()
                return role
            if not exists:
                raw.execute(f"CREATE ROLE {ident(role)} NOLOGIN")
            if not usage:
                raw.execute(f"GRANT USAGE ON SCHEMA {ident(schema)} TO {ident(role)}")
            if ungranted:
                raw.execute(f"GRANT SELECT ON {', '.join(f'{ident(schema)}.{ident(v)}' for v in ungranted)} "
                            f"TO {ident(role)}")
            if not member:
                raw.execute(f"GRANT {ident(role)} TO CURRENT_USER")
            raw.commit()
            return role
        except psycopg.errors.InsufficientPrivilege as exc:
            raw.rollback()
            user = raw.execute("SELECT current_user").fetchone()[0]
            raw.rollback()
            steps = "; ".join(grant_sql(schema, views, ident(user)))
            raise InvalidInput(
                f"SQL on this PostgreSQL catalog runs as the reader role {role!r}, which is missing or lacks "
                f"grants, and user {user!r} may not set it up ({str(exc).splitlines()[0]}). Ask a DBA to run: "
                f"{steps}") from None
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation,
                psycopg.errors.InternalError_) as exc:  # lost a race with another first use
            raw.rollback()
            if attempt:
                raise InvalidInput(f"could not set up the SQL reader role {role!r}: {str(exc).splitlines()[0]}; "
                                   "retry") from None
    return role


def _views() -> list[str]:
    """The views the reader role reads: every view of every schema revision."""
    from actdb.store.views import VIEWS_BY_REVISION

    return sorted({name for views in VIEWS_BY_REVISION.values() for name in views})


def _prepare(store: Store, raw: Any) -> tuple[str, str]:
    """(schema, reader role) of the connection, the role set up on first use in this process."""
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


# ------------------------------------------------------------------ the query transaction
def _begin(raw: Any, schema: str, role: str, limits: Limits, deadline: float | None) -> None:
    """Open the query transaction: read-only, as the reader role, schema pinned, limits set."""
    left = remaining(deadline, limits)
    timeout_ms = 0 if left is None else max(1, int(left * 1000))
    raw.execute(f"SET TRANSACTION READ ONLY; SET LOCAL ROLE {ident(role)}; "
                f"SET LOCAL search_path = {ident(schema)}; SET LOCAL statement_timeout = {timeout_ms}; "
                f"SET LOCAL work_mem = '{PG_WORK_MEM}'")


def _fetch(store: Store, raw: Any, query: str, limits: Limits, deadline: float | None,
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


# ------------------------------------------------------------------------ dissim()
def _setup_sql(schema: str) -> list[str]:
    """The session's temporary tables and lookup function (made by the session user)."""
    q = ident(schema)
    return [
        "CREATE TEMP TABLE IF NOT EXISTS actdb_dissim_default "
        "(measure text PRIMARY KEY, params_hash text NOT NULL, is_symmetric boolean NOT NULL)",
        "CREATE TEMP TABLE IF NOT EXISTS actdb_dissim_value "
        "(measure text, rep_a bigint, rep_b bigint, value double precision, PRIMARY KEY (measure, rep_a, rep_b))",
        "CREATE TEMP TABLE IF NOT EXISTS actdb_dissim_request "
        "(measure text, rep_a bigint, rep_b bigint, PRIMARY KEY (measure, rep_a, rep_b))",
        f"""CREATE OR REPLACE FUNCTION pg_temp.{_FUNCTION}(_measure text, _rep_a bigint, _rep_b bigint)
        RETURNS double precision LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE v double precision; h text; sym boolean;
        BEGIN
          IF _measure IS NULL OR _rep_a IS NULL OR _rep_b IS NULL THEN RETURN NULL; END IF;
          SELECT c.value INTO v FROM pg_temp.actdb_dissim_value c
           WHERE c.measure = _measure AND c.rep_a = _rep_a AND c.rep_b = _rep_b;
          IF FOUND THEN RETURN v; END IF;
          SELECT d.params_hash, d.is_symmetric INTO h, sym FROM pg_temp.actdb_dissim_default d
           WHERE d.measure = _measure;
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



def _run_with_lookup(store: Store, query: str, limits: Limits, lookup: Lookup) -> pa.Table:
    """A validated SELECT whose dissim() calls were rewritten to ``pg_temp.actdb_dissim``."""
    import psycopg

    with store.catalog.engine.connect() as conn:
        raw: Any = conn.connection.driver_connection  # plain psycopg: no read-only "begin" hook on setup
        raw.rollback()
        schema, role = _prepare(store, raw)
        try:
            for statement in _setup_sql(schema):
                raw.execute(statement)
            with raw.cursor() as cur:
                cur.executemany("INSERT INTO actdb_dissim_default VALUES (%s, %s, %s)", list(lookup.defaults()))
            raw.execute(f"GRANT SELECT, INSERT ON {', '.join(_TEMP_TABLES)} TO {ident(role)}")
            raw.commit()
        except psycopg.Error as exc:
            raw.rollback()
            raise InvalidInput(f"dissim() needs temporary tables and functions on the PostgreSQL catalog "
                               f"(privilege TEMP), which failed: {str(exc).splitlines()[0]}") from None
        table, requests = _fetch(store, raw, query, limits, limits.deadline(), dissim=True)
        if not requests:
            return table
        computed = lookup.compute(requests)
        with raw.cursor() as cur:
            cur.executemany("INSERT INTO actdb_dissim_value VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            [(*k, float(v)) for k, v in computed.items()])
        raw.commit()
        return _fetch(store, raw, query, limits, limits.deadline(), dissim=True)[0]
