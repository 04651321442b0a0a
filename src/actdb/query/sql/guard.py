"""The allow-list that read-only SQL must pass before it reaches the catalog engine.

A query is parsed with sqlglot and accepted only when every part of it is on a list:

- one statement whose root is a SELECT (or WITH / UNION / INTERSECT / EXCEPT of SELECTs);
- tables: the documented views (:data:`VIEWS`: every view :mod:`actdb.store.views` defines),
  unqualified, CTE names defined in the query itself (where they are in scope), and the
  row generators ``range`` / ``generate_series`` / ``unnest`` in FROM;
- functions: :data:`FUNCTIONS` (aggregates, window functions, math, string, date, JSON,
  list, conditional and cast functions a BI query needs, and ``dissim``), never qualified
  with a schema (``pg_catalog.f(...)``, ``x.f()``);
- cast targets: plain data types (:data:`TYPES`), so ``'x'::regclass`` and friends are out.

Everything else is refused with :class:`~actdb.errors.UnsafeQuery` naming the offending
name. Functions that build one value far larger than their arguments (``repeat``,
``lpad``, ``printf``, ``range`` as a scalar) are left off on purpose: a single such call
cannot be interrupted at the time limit and its memory is not counted by DuckDB's
``memory_limit``.

The validator is the first line only: PostgreSQL queries also run READ ONLY as a role
that can read nothing but the store's views (:mod:`actdb.store.sql_postgres`), DuckDB ones
on a connection with file and network access off (:mod:`actdb.store.sql_duckdb`).
"""

from __future__ import annotations

import functools

import sqlglot
import sqlglot.expressions as exp

from actdb.errors import InvalidInput, UnsafeQuery

#: Longest SQL text accepted (characters).
MAX_QUERY_CHARS = 100_000
#: Deepest nesting of parentheses accepted (a deeper query is refused before parsing).
MAX_NESTING = 200


def _views() -> frozenset[str]:
    from actdb.store.views import VIEWS_BY_REVISION

    return frozenset(name for views in VIEWS_BY_REVISION.values() for name in views)


#: The views a query may read (every view of every schema revision).
VIEWS: frozenset[str] = _views()

#: Row generators allowed in FROM (they stream, so the time limit interrupts them).
TABLE_FUNCTIONS = frozenset({"range", "generate_series", "exploding_generate_series", "unnest", "explode"})

# Names as sqlglot reports them (its canonical name for a function it knows, else the name
# as written): tests/query/test_sql_sandbox.py checks that the BI functions users write map here.
_AGGREGATES = """count count_if sum avg mean min max median mode quantile quantile_cont quantile_disc
    percentile_cont percentile_disc approx_quantile approx_distinct stddev stddev_pop stddev_samp variance
    variance_pop var_pop var_samp corr covar_pop covar_samp regr_slope regr_intercept regr_r2 regr_count
    logical_and logical_or bool_and bool_or every string_agg group_concat listagg array_agg list first last
    any_value arg_min arg_max min_by max_by product kurtosis skewness entropy histogram bitwise_and_agg
    bitwise_or_agg fsum favg sumkahan"""
_WINDOW = "row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value"
_MATH = """abs ceil ceiling floor round trunc sign sqrt cbrt exp ln log log2 log10 pow power mod greatest least
    pi degrees radians sin cos tan asin acos atan atan2 cot is_nan is_inf isnan isinf isfinite rand random div
    factorial gcd lcm even"""
_STRING = """length len char_length character_length octet_length lower upper lcase ucase trim ltrim rtrim btrim
    substr substring replace regexp_replace translate concat concat_ws left right str_position strpos position
    instr starts_with ends_with contains prefix suffix split_part split str_split string_split string_to_array
    array_to_string regexp_matches regexp_extract regexp_like regexp_full_match reverse initcap ascii chr md5
    hash quote_literal like_escape ilike_escape"""
_DATE = """now current_date current_time current_timestamp localtimestamp localtime timestamp_trunc date_trunc
    date_part datepart extract age date_diff datediff date_add date_sub date_bin date_from_parts make_date
    timestamp_from_parts make_timestamp to_timestamp unix_to_time time_to_unix epoch epoch_ms year month day
    hour minute second millisecond microsecond day_of_week dayofweek day_of_year dayofyear dayofmonth week
    week_of_year weekofyear yearweek isodow isoyear quarter last_day monthname dayname time_bucket strftime
    strptime str_to_date str_to_time time_to_str to_char to_date"""
_OTHER = """cast try_cast case if coalesce nullif ifnull nvl typeof collate exists array array_size cardinality
    array_length array_contains list_contains list_has array_position list_position list_extract
    array_extract list_element list_sort array_sort list_distinct array_distinct list_aggregate list_sum
    list_avg list_min list_max list_count list_value flatten struct_extract struct_pack map_keys map_values
    json_extract json_extract_scalar json_extract_string json_extract_path json_extract_path_text
    json_array_length json_keys json_valid json_type j_s_o_n_object to_json
    map var_map row struct unnest explode dissim"""
#: Functions a query may call.
FUNCTIONS = frozenset(" ".join([_AGGREGATES, _WINDOW, _MATH, _STRING, _DATE, _OTHER]).split())

_T = exp.DataType.Type
#: Data types a query may cast to.
TYPES = frozenset({
    _T.ARRAY, _T.LIST, _T.STRUCT, _T.MAP, _T.TEXT, _T.VARCHAR, _T.CHAR, _T.NCHAR, _T.NVARCHAR, _T.NAME,
    _T.BIGINT, _T.INT, _T.SMALLINT, _T.TINYINT, _T.UBIGINT, _T.UINT, _T.USMALLINT, _T.UTINYINT, _T.INT128,
    _T.UINT128, _T.DOUBLE, _T.FLOAT, _T.DECIMAL, _T.BOOLEAN, _T.DATE, _T.TIME, _T.TIMETZ, _T.TIMESTAMP,
    _T.TIMESTAMPTZ, _T.TIMESTAMPLTZ, _T.TIMESTAMP_S, _T.TIMESTAMP_MS, _T.TIMESTAMP_NS, _T.INTERVAL, _T.JSON,
    _T.JSONB, _T.UUID, _T.VARBINARY, _T.BINARY, _T.NULL, _T.UNKNOWN,
})

_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.With, exp.Subquery)
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.Copy, exp.Pragma,
           exp.Set, exp.Use, exp.Attach, exp.Detach, exp.Into)
_VIEW_HINT = ("query the catalog views ({}) or a CTE the query defines")


def check_select(query: str, *, dialect: str = "duckdb") -> exp.Expression:
    """Parse ``query`` and refuse anything but a single SELECT made of allowed parts.

    Verdicts are remembered per (query, dialect) (a dashboard repeats its queries), so
    the returned tree is shared: copy it before changing it."""
    if not isinstance(query, str) or not query.strip():
        raise UnsafeQuery("empty SQL; give one SELECT statement")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"SQL of {len(query):,} characters is longer than the limit of {MAX_QUERY_CHARS:,}")
    if "\x00" in query:
        raise InvalidInput("SQL contains a NUL character; remove it")
    depth = _nesting(query)
    if depth > MAX_NESTING:
        raise InvalidInput(f"SQL nests parentheses {depth} deep, more than the limit of {MAX_NESTING}; "
                           "flatten the expression")
    return _checked(query, dialect)


def _nesting(query: str) -> int:
    """Deepest parenthesis nesting outside string literals and quoted identifiers."""
    depth = deepest = 0
    quote = ""
    for ch in query:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


@functools.lru_cache(maxsize=256)
def _checked(query: str, dialect: str) -> exp.Expression:
    try:
        statements = [s for s in sqlglot.parse(query, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise InvalidInput(f"SQL does not parse: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise InvalidInput("SQL is nested too deeply to parse; flatten the expression") from None
    if len(statements) != 1:
        raise UnsafeQuery(f"{len(statements)} statements given; actdb SQL runs exactly one SELECT")
    tree = statements[0]
    if not isinstance(tree, _ROOTS):
        raise UnsafeQuery(f"only SELECT queries are allowed, not {tree.key.upper()}; the catalog is read-only here")
    try:
        for node in tree.walk():
            _check_node(node)
    except RecursionError:
        raise InvalidInput("SQL is nested too deeply to check; flatten the expression") from None
    return tree


def function_name(node: exp.Func) -> str:
    """The lower-case name sqlglot gives a function call (as written when it does not know it)."""
    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def _check_node(node: exp.Expr) -> None:
    if isinstance(node, _WRITES):
        raise UnsafeQuery(f"{node.key.upper()} is not allowed in a read-only query")
    if isinstance(node, exp.Func) and not isinstance(node, (exp.Binary, exp.Unary)):  # operators are Funcs too
        name = function_name(node)
        if isinstance(node.parent, exp.Dot) and node.arg_key == "expression":
            raise UnsafeQuery(f"qualified function call {node.parent.sql()!r} is not allowed; call {name}(...) "
                              "by its plain name")
        if name not in FUNCTIONS and not (name in TABLE_FUNCTIONS and isinstance(node.parent, exp.Table)):
            raise UnsafeQuery(f"function {name}() is not allowed: actdb SQL allows aggregates, window, math, "
                              "string, date, JSON, list and conditional functions and dissim() "
                              "(see docs/interfaces.md)")
    elif isinstance(node, exp.Table):
        _check_table(node)
    elif isinstance(node, exp.DataType) and node.this not in TYPES:
        raise UnsafeQuery(f"type {node.sql()!r} is not allowed in a cast; use a plain type "
                          "(integer, double, text, date, timestamp, boolean, json, ...)")


def _check_table(node: exp.Table) -> None:
    target = node.this
    if isinstance(target, exp.Func):
        name = function_name(target)
        if name not in TABLE_FUNCTIONS:
            raise UnsafeQuery(f"table function {name}() is not allowed: "
                              + _VIEW_HINT.format(", ".join(sorted(VIEWS))))
        return
    if node.args.get("db") or node.args.get("catalog") or not isinstance(target, exp.Identifier):
        raise UnsafeQuery(f"table {node.sql()!r} is not allowed: name a view without a schema; "
                          + _VIEW_HINT.format(", ".join(sorted(VIEWS))))
    name = target.name.lower()
    if name in VIEWS or name in _ctes_in_scope(node):
        return
    raise UnsafeQuery(f"table {target.name!r} is not allowed: " + _VIEW_HINT.format(", ".join(sorted(VIEWS))))


def _ctes_in_scope(node: exp.Expr) -> set[str]:
    """Names of the CTEs a table reference at ``node`` can see: those of every enclosing
    WITH, except that inside a CTE's own body only the earlier CTEs of its WITH are
    visible (all of them under WITH RECURSIVE)."""
    names: set[str] = set()
    child, parent = node, node.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            ctes = list(parent.expressions)
            index = next((i for i, c in enumerate(ctes) if c is child), len(ctes))
            visible = ctes if parent.args.get("recursive") else ctes[:index]
            names.update(c.alias_or_name.lower() for c in visible)
        else:
            for value in parent.args.values():
                if isinstance(value, exp.With) and value is not child:
                    names.update(c.alias_or_name.lower() for c in value.expressions)
        child, parent = parent, parent.parent
    return names
