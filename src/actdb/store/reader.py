"""The PostgreSQL role that read-only SQL runs as: it can read the store's views, nothing else.

Every query of ``db.sql`` / ``actdb sql`` / ``POST /v1/sql`` on a PostgreSQL catalog runs in a
READ ONLY transaction after ``SET LOCAL ROLE actdb_reader_<schema>``: a NOLOGIN role with
USAGE on the store's schema and SELECT on its views, and no other grant. So even a query
that got past the SQL validator cannot read the raw tables, other schemas' tables, or
server files (those need grants or superuser rights the role does not have); what every
role may read (``PUBLIC`` grants such as ``pg_settings``) stays readable.

The role is created and granted on first use by a user who may (the store's owner with
CREATEROLE, or a superuser). Where that user may not, :func:`grant_sql` is what a DBA runs.
A view that a later schema revision recreates loses its grant; the next query notices
(:func:`ensure_reader` checks every view) and grants it again.
"""

from __future__ import annotations

import hashlib
from typing import Any

from actdb.errors import InvalidInput

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
