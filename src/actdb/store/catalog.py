"""The catalog connection: engine creation, short transactions, busy handling, bulk loads.

DuckDB lets one process open a file read-write, and while it does no other process can
open it at all. So actdb never holds a DuckDB catalog open between operations: every
transaction opens the file, works, and closes it (``NullPool``); a process that finds
the file locked retries with backoff and then raises :class:`StoreBusy` naming the
writer's pid. PostgreSQL catalogs work the same way, without the lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from actdb.errors import CorruptStore, InvalidInput, NotAStore, ReadOnly
from actdb.store.busy import lock_holder, retry_while_busy

_CORRUPT_PATTERNS = ("not a valid DuckDB database file", "Could not read enough bytes", "Corrupt database file",
                     "database file is corrupt")


# A PostgreSQL schema name actdb accepts: a plain (unquoted, lowercase) identifier, so that
# the name in the URL, in ``search_path`` and in ``psql -c 'SELECT * FROM name.reps'`` is one name.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_OPTIONS_SEARCH_PATH = re.compile(r"(?:-c\s*|--)search_path=(\S+)")


def parse_schema(value: object) -> str:
    """A PostgreSQL schema name from a catalog URL's ``?schema=``: a plain identifier."""
    if (not isinstance(value, str) or not _SCHEMA_NAME.fullmatch(value) or value.startswith("pg_")
            or value == "information_schema"):
        raise InvalidInput(
            f"PostgreSQL schema {value!r:.100} in the catalog URL is not a plain identifier: use at most 63 "
            "lowercase letters, digits and underscores, starting with a letter or underscore and not with "
            "'pg_' (e.g. ?schema=team_a)")
    return value


def _parse_url(url: str | sa.URL) -> sa.URL:
    """``url`` parsed; an empty ``?schema=`` (which parsing would drop) is refused."""
    if isinstance(url, str) and re.search(r"[?&]schema=(?:&|$)", url):
        parse_schema("")
    return sa.engine.make_url(url)


def catalog_schema(url: str | sa.URL) -> str | None:
    """The PostgreSQL schema a catalog URL names: ``?schema=NAME``, or the first entry of
    ``?options=-csearch_path=NAME`` (libpq's form); None when it names none (the
    server's default search_path, usually ``public``) or is not PostgreSQL."""
    u = _parse_url(url)
    if u.get_backend_name() != "postgresql":
        return None
    if "schema" in u.query:
        return parse_schema(u.query["schema"])
    options = u.query.get("options")
    found = _OPTIONS_SEARCH_PATH.search(options) if isinstance(options, str) else None
    if found is None:
        return None
    first = found.group(1).split(",")[0].strip()
    if first.startswith('"') and first.endswith('"') and len(first) > 1:
        return first[1:-1].replace('""', '"')
    return first.lower()  # an unquoted name folds to lowercase, as PostgreSQL reads it


def connect_url(url: str) -> sa.URL:
    """The URL handed to SQLAlchemy: ``?schema=NAME`` (actdb's, not a libpq parameter)
    becomes ``options=-csearch_path=NAME``, so every connection of the catalog (and of
    psycopg under it) works in that schema."""
    u = _parse_url(url)
    if "schema" not in u.query:
        return u
    if u.get_backend_name() != "postgresql":
        raise InvalidInput(f"?schema= in catalog URL {u.render_as_string(hide_password=True)!r} applies to "
                           "PostgreSQL catalogs only; remove it")
    schema = parse_schema(u.query["schema"])
    options = u.query.get("options", "")
    if not isinstance(options, str) or _OPTIONS_SEARCH_PATH.search(options):
        raise InvalidInput(f"catalog URL {u.render_as_string(hide_password=True)!r} names its schema twice "
                           "(?schema= and options=-csearch_path=); give it once, as ?schema=NAME")
    options = f"{options} -csearch_path={schema}".strip()
    return u.difference_update_query(["schema"]).update_query_dict({"options": options})


def ensure_schema(engine: sa.Engine, schema: str, *, create: bool, where: str) -> None:
    """Make sure the PostgreSQL schema of a catalog exists: created when missing and
    ``create`` (a new store in a shared database), else :class:`NotAStore`."""
    with engine.connect() as conn:
        found = conn.exec_driver_sql("SELECT 1 FROM pg_namespace WHERE nspname = %(s)s", {"s": schema}).first()
        if found is not None:
            return
        if not create:
            database = engine.url.database
            raise NotAStore(f"the PostgreSQL database {database!r} has no schema {schema!r}, so store {where} "
                            "has no catalog there yet; open it once for writing (e.g. `actdb init`) to create it")
        try:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.commit()
        except sa.exc.ProgrammingError as exc:
            conn.rollback()
            if "permission denied" not in str(exc):
                raise
            user = conn.exec_driver_sql("SELECT current_user").scalar()
            raise InvalidInput(
                f"PostgreSQL user {user!r} may not create schema {schema!r} in database "
                f"{engine.url.database!r} ({str(exc.orig).splitlines()[0]}); ask a DBA to run "
                f'CREATE SCHEMA "{schema}" AUTHORIZATION "{user}", then open the store again') from None
        except sa.exc.IntegrityError:  # a concurrent first open created it meanwhile
            conn.rollback()


def make_engine(url: str, *, read_only: bool) -> sa.Engine:
    """An engine for a catalog URL (``duckdb:///path`` or any SQLAlchemy URL; a PostgreSQL
    URL may name its schema with ``?schema=NAME``, see :func:`connect_url`)."""
    if url.startswith("duckdb"):
        connect_url(url)  # refuses ?schema=, which DuckDB would take for a setting
        config: dict[str, Any] = {}
        if read_only:
            config["read_only"] = True
        return sa.create_engine(url, poolclass=NullPool, connect_args=config)
    # No pool: connections live for one transaction (or one session), so a dropped
    # Database never leaves sockets open behind it.
    engine = sa.create_engine(connect_url(url), poolclass=NullPool)
    if read_only:
        @sa.event.listens_for(engine, "begin")
        def _read_only(conn: sa.Connection) -> None:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    return engine


_WRITE_LOCKS: dict[str, threading.RLock] = {}  # DuckDB file -> this process's write lock
_WRITE_LOCKS_GUARD = threading.Lock()

def is_corrupt_error(exc: BaseException) -> bool:
    text = str(exc)
    return any(p in text for p in _CORRUPT_PATTERNS)


def corrupt_error(exc: BaseException, where: str) -> CorruptStore:
    first = str(getattr(exc, "orig", exc)).splitlines()[0]
    return CorruptStore(
        f"the catalog of store {where} is damaged ({first}); nothing was changed. Restore "
        "catalog.duckdb from a backup: the arrays are separate files and are not affected")


def is_encoding_error(exc: BaseException) -> bool:
    """A text parameter the catalog cannot hold: not encodable as UTF-8 (a lone surrogate:
    psycopg raises UnicodeEncodeError, DuckDB a "cannot encode str as UTF-8" conversion
    failure), or a NUL character, which PostgreSQL text refuses."""
    orig = getattr(exc, "orig", exc)
    text = str(orig)
    return isinstance(orig, UnicodeEncodeError) or "cannot encode str as UTF-8" in text \
        or "cannot contain NUL" in text


def encoding_error() -> InvalidInput:
    """The last line of defence behind the named checks of :mod:`actdb.store.parse`."""
    return InvalidInput("a name or text given to the catalog cannot be stored: it is not valid UTF-8 (a lone "
                        "surrogate, e.g. from a JSON '\\ud800' escape) or holds a NUL character; fix the source "
                        "text")


class Catalog:
    """A catalog database: short transactions with lock retries."""

    def __init__(self, url: str, *, read_only: bool, where: str, busy_timeout: float = 10.0):
        self.url = url
        self.read_only = read_only
        self.where = where
        self.busy_timeout = busy_timeout
        self.engine = make_engine(url, read_only=read_only)
        self.dialect = self.engine.dialect.name
        self._local = threading.local()
        #: the PostgreSQL schema the catalog lives in, when its URL names one
        self.schema = catalog_schema(url)
        if self.schema is not None:
            ensure_schema(self.engine, self.schema, create=not read_only, where=where)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold one connection for several short transactions (a batch of writes).

        Opening a DuckDB file is costly (docs/interfaces.md); a session pays it once. Keep sessions short:
        while one is open, other processes cannot open a DuckDB catalog at all.
        """
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        conn = self._open()
        self._local.conn = conn
        try:
            yield
        finally:
            self._local.conn = None
            conn.close()

    @contextlib.contextmanager
    def connect(self, *, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction; committed on success, rolled back on error."""
        if write and self.read_only:
            raise ReadOnly(f"store {self.where} was opened read-only; reopen it with read_only=False to write")
        held = getattr(self._local, "conn", None)
        try:
            if held is not None:
                if held.in_transaction():
                    yield held
                    return
                with self._writing(write), held.begin():
                    yield held
                return
            with self._writing(write):
                conn = self._open()
                try:
                    with conn.begin():
                        yield conn
                finally:
                    conn.close()
        except sa.exc.DBAPIError as exc:
            if self.dialect == "duckdb" and is_corrupt_error(exc):
                raise corrupt_error(exc, self.where) from None
            if is_encoding_error(exc):
                raise encoding_error() from None
            raise
        except (sa.exc.StatementError, UnicodeEncodeError) as exc:
            if is_encoding_error(exc):
                raise encoding_error() from None
            raise

    def _writing(self, write: bool) -> contextlib.AbstractContextManager[Any]:
        """For a write transaction on a DuckDB file: this process's lock of that file.

        Threads of one process share one DuckDB instance, whose optimistic concurrency
        control fails the later of two overlapping transactions that write the same key
        (a unique-constraint or commit conflict) instead of making it wait, as PostgreSQL
        does. Other processes are kept out by the file lock; this keeps out the other
        threads of this one, so a get-or-create never sees a write it cannot see yet."""
        if not write or self.dialect != "duckdb":
            return contextlib.nullcontext()
        database = sa.engine.make_url(self.url).database or ":memory:"
        key = database if database == ":memory:" else os.path.realpath(database)
        with _WRITE_LOCKS_GUARD:
            return _WRITE_LOCKS.setdefault(key, threading.RLock())

    def _open(self) -> sa.Connection:
        def holder() -> str:
            return "writer" if self.read_only or self.dialect != "duckdb" else \
                lock_holder(sa.engine.make_url(self.url).database)

        try:
            return retry_while_busy(self.engine.connect, timeout=self.busy_timeout, where=self.where,
                                    intent_file=self.intent_file, write=not self.read_only, holder=holder)
        except sa.exc.DBAPIError as exc:
            if self.dialect == "duckdb" and is_corrupt_error(exc):
                raise corrupt_error(exc, self.where) from None
            raise

    @property
    def intent_file(self) -> str | None:
        """``catalog.duckdb.writer-waiting``: a writer waiting for the lock says so here, and
        readers hold back until it got in (DuckDB readers would otherwise starve it)."""
        if self.dialect != "duckdb":
            return None
        database = sa.engine.make_url(self.url).database
        return None if not database or database == ":memory:" else database + ".writer-waiting"

    def dispose(self) -> None:
        self.engine.dispose()


def insert_if_absent(conn: sa.Connection, table: sa.Table, values: dict[str, Any],
                     key: tuple[str, ...]) -> bool:
    """Insert one row unless a row with the same ``key`` columns (a unique constraint)
    exists: ``INSERT ... ON CONFLICT (key) DO NOTHING``, which DuckDB and PostgreSQL both
    run. True when this call inserted the row.

    This is the race-safe half of get-or-create: two writers creating the same name at
    once both succeed here, one inserting and one doing nothing (PostgreSQL makes the second
    wait for the first's commit), and the transaction stays usable either way, unlike
    catching an ``IntegrityError``, which aborts a PostgreSQL transaction. Read the row
    afterwards in the same transaction."""
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # PostgreSQL, and DuckDB (whose SQLAlchemy dialect derives from PostgreSQL's)
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]

    stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=list(key))
    if "id" in table.c:
        return conn.execute(stmt.returning(table.c.id)).first() is not None
    return conn.execute(stmt).rowcount != 0


def bulk_insert(conn: sa.Connection, table: sa.Table, data: pa.Table) -> None:
    """Insert an Arrow table fast: DuckDB scans Arrow directly, PostgreSQL uses COPY."""
    if data.num_rows == 0:
        return
    cols = ", ".join(f'"{c}"' for c in data.column_names)
    # the driver's own connection (duckdb's or psycopg's); SQLAlchemy types it as optional and untyped
    raw: Any = conn.connection.driver_connection
    if conn.dialect.name == "duckdb":
        raw.register("_actdb_bulk", data)
        try:
            raw.execute(f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM _actdb_bulk')
        finally:
            raw.unregister("_actdb_bulk")
        return
    if conn.dialect.name == "postgresql":
        with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({cols}) FROM STDIN') as copy:
            for row in zip(*(c.to_pylist() for c in data.columns)):
                copy.write_row(row)
        return
    conn.execute(table.insert(), data.to_pylist())
