"""Fuzzing the parsers at the trust boundary (hypothesis, bounded): the filter-string
parser, the subset-predicate validator and the read-only SQL checker only ever raise
actdb errors, and never accept a statement that writes, reads files or reads settings.

Accepted SQL is also run for real against a store next to a secret file: the secret
never comes back and nothing is written. Examples per property: ``FUZZ_EXAMPLES``
(300; 3,000 when ``ACTDB_FAULT_TRIALS`` >= 30).
"""

from __future__ import annotations

import os
import re

import pytest
import sqlglot
import sqlglot.expressions as exp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_kit import Snapshot

import actdb
from actdb.query.filters import KEYS, parse_filter_string
from actdb.query.rows import _SAFE_FUNCS, normalize_subset
from actdb.query.sql import check_select

pytestmark = pytest.mark.slow

FULL = int(os.environ.get("ACTDB_FAULT_TRIALS", "3")) >= 30
FUZZ_EXAMPLES = 3000 if FULL else 300
SQL_RUNS = 1000 if FULL else 100
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=not FULL,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------- vocabularies
COLUMNS = ["row", "example", "position", "token_id", "token", "char_start", "char_end", "special", "text", "label",
           "split", "secret", "t.label", "main.t.label", "rep.path"]
FILE_FUNCS = ["read_csv", "read_csv_auto", "read_text", "read_blob", "read_parquet", "read_json", "read_json_objects",
              "parquet_scan", "parquet_metadata", "sqlite_scan", "glob", "sniff_csv", "getenv", "current_setting",
              "duckdb_settings", "duckdb_secrets", "query", "query_table", "pg_read_file", "pg_ls_dir", "lo_import",
              "load_extension", "system"]
SAFE_FUNCS = [*sorted(_SAFE_FUNCS), "length", "lower"]
LITERALS = ["1", "0", "-1", "'a'", "''", "'{out}/secret.csv'", "NULL", "TRUE", "1e308", "'%'", "'x''y'", "X'00'"]
KEYWORDS = ["SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "IS", "NULL", "CASE", "WHEN", "THEN",
            "ELSE", "END", "BETWEEN", "UNION", "ALL", "EXISTS", "COPY", "TO", "ATTACH", "DETACH", "INSTALL", "LOAD",
            "PRAGMA", "SET", "RESET", "CALL", "INSERT", "INTO", "VALUES", "UPDATE", "DELETE", "DROP", "CREATE",
            "TABLE", "VIEW", "ALTER", "EXPORT", "DATABASE", "IMPORT", "USE", "VACUUM", "CHECKPOINT", "WITH", "AS",
            "RETURNING", "LIMIT", "ORDER", "BY", "GROUP", "HAVING", "JOIN", "ON", "LATERAL", "TABLESAMPLE"]
PUNCT = ["(", ")", ",", ";", "=", "<>", "<", ">", "+", "-", "*", "/", "%", "||", "::", ".", "'", '"', "--", "/*",
         "*/", "->", "\\", "\x00", "\n", "$$", "?", "$1", "[", "]", "{", "}"]
VIEWS = ["models", "checkpoints", "datasets", "examples", "tokens", "reps", "results", "dissimilarities", "rep",
         "model", "'{out}/secret.csv'", '"{out}/secret.csv"', "evil.main.t", "information_schema.tables",
         "range(10)", "read_csv('{out}/secret.csv')", "glob('{out}/*')"]


def _call(name: str, args: list[str]) -> str:
    return f"{name}({', '.join(args)})"


atoms = st.one_of(st.sampled_from(COLUMNS), st.sampled_from(LITERALS))
calls = st.builds(_call, st.sampled_from(FILE_FUNCS + SAFE_FUNCS), st.lists(atoms, max_size=2))
terms = st.one_of(atoms, calls)
comparisons = st.builds(lambda a, op, b: f"{a} {op} {b}", terms, st.sampled_from(["=", "<>", ">", "LIKE", "IS"]),
                        terms)
noise = st.one_of(st.sampled_from(KEYWORDS), st.sampled_from(PUNCT), terms, st.sampled_from(VIEWS))
fragments = st.lists(st.one_of(comparisons, noise), min_size=1, max_size=12).map(" ".join)
pure = st.builds(lambda a, op, b: f"{a} {op} {b}", st.sampled_from(COLUMNS[:11]),
                 st.sampled_from(["=", "<>", ">", "<=", "LIKE"]), st.sampled_from(LITERALS[:6]) | st.builds(
                     _call, st.sampled_from(SAFE_FUNCS), st.lists(st.sampled_from(COLUMNS[:11]), min_size=1,
                                                                   max_size=1)))
predicates = st.one_of(
    st.lists(pure, min_size=1, max_size=3).map(" OR ".join),
    st.builds(lambda p, q: f"{p} AND ({q})", pure, comparisons),
    fragments,
    st.lists(comparisons, min_size=1, max_size=4).map(" AND ".join),
    st.builds(lambda p, tail: f"{p} {tail}", comparisons, fragments),
    st.text(max_size=80),
)
selects = st.one_of(
    st.builds(lambda cols, view, where: f"SELECT {cols} FROM {view} WHERE {where}",
              st.sampled_from(["*", "count(*)", "1"]), st.sampled_from(VIEWS[:8]), pure | comparisons),
    st.builds(lambda cols, view, where: f"SELECT {cols} FROM {view} a JOIN {view} b ON a.{where}",
              st.sampled_from(["a.*", "count(*)"]), st.sampled_from(VIEWS[:8]), pure),
    st.builds(lambda cols, view, where: f"SELECT {cols} FROM {view}" + (f" WHERE {where}" if where else ""),
              st.sampled_from(["*", "count(*)", "1", "model", "a.*"]).map(str) | calls,
              st.sampled_from(VIEWS), st.none() | predicates),
    st.builds(lambda a, b: f"{a}; {b}", st.just("SELECT 1"), fragments),
    st.builds(lambda kw, rest: f"{kw} {rest}", st.sampled_from(KEYWORDS), fragments),
    st.builds(lambda inner: f"WITH x AS ({inner}) SELECT * FROM x", fragments),
    fragments,
    st.text(max_size=80),
)
filter_values = st.text(alphabet=st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["x' OR '1'='1", "../etc", "*", "1:2", "1:2:0", "a|b|", ":", "::", "1|2:3", "[", "[!a]", "\x00"])
plausible_values = st.from_regex(r"[A-Za-z0-9_.*?|:\-/\[\]]{1,12}", fullmatch=True)
filter_strings = st.one_of(
    st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from([*KEYS, "evil", "", "model "]), filter_values),
             max_size=4).map(",".join),
    st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), plausible_values), min_size=1,
             max_size=3).map(",".join),
    st.text(max_size=60),
)

# ---------------------------------------------------------------- oracles
WRITE_NODES = (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.Copy,
               exp.Pragma, exp.Set, exp.Use, exp.Attach, exp.Detach, exp.Into)
FILEISH = re.compile(r"^(read_|parquet_|sqlite_|postgres_|glob$|sniff_|getenv$|current_setting$|duckdb_se|query"
                     r"|pg_|lo_|load|install|system$)|_scan$")


def _functions(tree: exp.Expression) -> set[str]:
    out = set()
    for node in tree.walk():
        if isinstance(node, exp.Anonymous):
            out.add(node.name.lower())
        elif isinstance(node, exp.Func):
            out.add(node.sql_name().lower())
    return out


ACCEPTED: dict[str, int] = {}


def _only_actdb_errors(fn, *args):  # type: ignore[no-untyped-def]
    try:
        out = fn(*args)
        ACCEPTED[fn.__name__] = ACCEPTED.get(fn.__name__, 0) + 1
        return out
    except actdb.ActdbError:
        return None
    except Exception as exc:  # the property under test
        pytest.fail(f"{fn.__name__}({args!r:.300}) raised {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- properties
@FUZZ
@given(text=filter_strings)
def test_filter_strings_only_raise_actdb_errors(hostile_store, text):
    db, _ = hostile_store
    parsed = _only_actdb_errors(parse_filter_string, text)
    if parsed is None:
        return
    assert set(parsed) <= set(KEYS)
    _only_actdb_errors(lambda: list(db.reps(**parsed)))  # matching is in memory, never SQL


@FUZZ
@given(predicate=predicates)
def test_subset_validator_only_accepts_pure_predicates(hostile_store, predicate):
    _, outside = hostile_store
    predicate = predicate.replace("{out}", str(outside))
    canonical = _only_actdb_errors(normalize_subset, predicate)
    if canonical is None:
        return
    tree = sqlglot.parse_one(f"SELECT 1 FROM t WHERE {canonical}", read="duckdb")
    where = tree.args["where"]
    assert not any(isinstance(n, (*WRITE_NODES, exp.Select, exp.Subquery, exp.Table)) for n in where.walk())
    assert not {f for f in _functions(where) if FILEISH.search(f)}, canonical
    assert normalize_subset(predicate) == canonical  # deterministic (a sound cache key)
    _only_actdb_errors(normalize_subset, canonical)  # the canonical form never crashes the validator


@FUZZ
@given(query=selects)
def test_sql_checker_never_accepts_writes_or_file_reads(hostile_store, query):
    _, outside = hostile_store
    query = query.replace("{out}", str(outside))
    tree = _only_actdb_errors(check_select, query)
    if tree is None:
        return
    assert not any(isinstance(n, WRITE_NODES) for n in tree.walk()), query
    assert not {f for f in _functions(tree) if FILEISH.search(f)}, query
    for table in tree.find_all(exp.Table):
        assert "/" not in table.name and not table.args.get("catalog"), query


@settings(FUZZ, max_examples=SQL_RUNS)
@given(query=selects)
def test_accepted_sql_runs_without_writing_or_leaking(hostile_store, query):
    db, outside = hostile_store
    snap = Snapshot(db, outside) if not hasattr(db, "_fuzz_snapshot") else db._fuzz_snapshot
    db._fuzz_snapshot = snap
    query = query.replace("{out}", str(outside))
    table = _only_actdb_errors(lambda: db.sql(query, max_rows=1000, timeout=2.0))
    if table is not None:
        assert "TOPSECRET" not in str(table.to_pylist())


def test_fuzzed_sql_left_the_store_unchanged(hostile_store):
    db, _ = hostile_store
    snap = getattr(db, "_fuzz_snapshot", None)
    assert snap is not None, "run with the fuzz tests above"
    snap.assert_unchanged()
    # the properties are not vacuous: the generators reach the accepting paths too
    assert ACCEPTED.get("parse_filter_string", 0) >= 10, ACCEPTED
    assert ACCEPTED.get("normalize_subset", 0) >= 10, ACCEPTED
    assert ACCEPTED.get("check_select", 0) >= 10, ACCEPTED
    assert ACCEPTED.get("<lambda>", 0) >= 5, ACCEPTED  # accepted SQL that really ran
