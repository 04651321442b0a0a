"""Row spaces: which rows of each rep a comparison reads, and how.

- Direct spaces (token-level reps with one token table, or example-level reps): rows are
  read straight from the arrays, block by block, optionally restricted to a subset.
- Aligned spaces (``align="example:mean|first|last"`` or ``align="word"``): each rep is
  pooled to shared units (texts or whitespace words) while streaming, then compared.

Subsets are SQL predicates over the token and example columns, validated with sqlglot
and evaluated by an in-memory DuckDB connection that cannot touch files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import sqlglot
import sqlglot.expressions as exp

from actdb.errors import InvalidInput, UnsafeQuery
from actdb.store.arrays import RepArray

if TYPE_CHECKING:
    from actdb.query.storage import Storage
    from actdb.query.tasks import RowSpace
    from actdb.store.records import RepRecord

TOKEN_COLUMNS = ("row", "example", "position", "token_id", "token", "char_start", "char_end", "special")
EXAMPLE_COLUMNS = ("example", "text", "label", "split")
_SAFE_FUNCS = {"lower", "upper", "length", "abs", "coalesce", "trim", "substring", "substr", "strpos",
               "starts_with", "ends_with", "contains", "regexp_matches", "like", "ilike", "least", "greatest",
               "round", "floor", "ceil", "mod", "len", "nullif", "ifnull",
               "typeof", "octet_length", "power", "pow"}  # (the last four: how sqlglot renders length()
                                                          # and round(x, n) for DuckDB)
_WORD = re.compile(r"\S+")


def normalize_subset(predicate: str) -> str:
    """Validate a row-subset predicate and return its canonical SQL text.

    Allowed: comparisons, boolean logic, IN lists, LIKE, CASE, arithmetic, and a few pure
    string/number functions over the columns token, example, position, token_id, row,
    char_start, char_end, special, text, label, split. Refused: statements, subqueries,
    any other function (nothing that reads files or settings). The canonical text (what is
    evaluated and hashed into the cache key) is validated too: what runs is what was checked.
    """
    canonical = _check_predicate(predicate)
    try:
        _check_predicate(canonical)
    except InvalidInput as exc:
        raise type(exc)(f"subset {predicate!r} cannot be used: its canonical form {canonical!r} is refused "
                        f"({exc}); simplify the predicate") from None
    return canonical


def _check_predicate(predicate: str) -> str:
    """One validation pass: the checks of :func:`normalize_subset`, and the generated SQL.

    Allowed: comparisons, boolean logic, IN lists, LIKE, CASE, arithmetic, and a few pure
    string/number functions over the columns token, example, position, token_id, row,
    char_start, char_end, special, text, label, split. Refused: statements, subqueries,
    any other function (nothing that reads files or settings).
    """
    if not isinstance(predicate, str) or not predicate.strip():
        raise InvalidInput("subset must be a non-empty SQL predicate, e.g. \"label = 'x' AND position > 0\"")
    if ";" in predicate:
        raise UnsafeQuery(f"subset {predicate!r} contains ';': give one predicate, not statements")
    try:
        tree = sqlglot.parse_one(f"SELECT 1 FROM t WHERE {predicate}", read="duckdb")
    except sqlglot.errors.SqlglotError as exc:
        raise InvalidInput(f"subset {predicate!r} does not parse: {str(exc).splitlines()[0]}") from None
    where = tree.args.get("where")
    no_from = tree.args.get("from_") is None and tree.args.get("from") is None
    if not isinstance(tree, exp.Select) or where is None or no_from:
        raise UnsafeQuery(f"subset {predicate!r} is not a plain predicate")
    allowed = set(TOKEN_COLUMNS) | set(EXAMPLE_COLUMNS)
    for node in where.walk():
        if isinstance(node, (exp.Select, exp.Subquery, exp.Command, exp.Copy, exp.Pragma, exp.Set, exp.Attach,
                             exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Table)):
            raise UnsafeQuery(f"subset {predicate!r} may not contain {node.key.upper()}: only a predicate over columns")
        if isinstance(node, exp.Anonymous) and node.name.lower() not in _SAFE_FUNCS:
            raise UnsafeQuery(f"subset {predicate!r} calls {node.name}(), which is not allowed; allowed functions: "
                              + ", ".join(sorted(_SAFE_FUNCS)))
        if isinstance(node, exp.Func) and not isinstance(node, (exp.Like, exp.ILike, exp.In, exp.Between, exp.Case,
                                                                 exp.If, exp.Cast, exp.Not, exp.And, exp.Or)):
            name = node.sql_name().lower()
            if name not in _SAFE_FUNCS:
                raise UnsafeQuery(f"subset {predicate!r} calls {name}(), which is not allowed; allowed functions: "
                                  + ", ".join(sorted(_SAFE_FUNCS)))
        if isinstance(node, exp.Column) and (node.table or node.name not in allowed):
            raise InvalidInput(f"subset column {node.sql()!r} is unknown; columns: {', '.join(sorted(allowed))}")
    sql: str = where.this.sql(dialect="duckdb")
    return sql


def _evaluate(predicate: str, table: pa.Table, key: str) -> np.ndarray:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        con.register("t", table)
        rows = con.sql(f"SELECT {key} FROM t WHERE {predicate} ORDER BY {key}").fetchnumpy()[key]
    except duckdb.Error as exc:
        raise InvalidInput(f"subset {predicate!r} failed: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    return np.asarray(rows, dtype=np.int64)


def _examples(storage: Storage, rep: RepRecord) -> pa.Table:
    return storage.examples(rep)


def subset_rows(storage: Storage, rep: RepRecord, predicate: str) -> np.ndarray:
    """Row indices (sorted) of ``rep`` that satisfy ``predicate``."""
    examples = _examples(storage, rep)
    if rep.pooling == "token":
        tokens = storage.token_table(rep)
        joined = tokens.join(examples, "example", join_type="left outer").sort_by("row")
        return _evaluate(predicate, joined, "row")
    names = set(re.findall(r"[A-Za-z_]+", predicate)) & (set(TOKEN_COLUMNS) - {"example"})
    if names:
        raise InvalidInput(f"subset {predicate!r} uses token column(s) {sorted(names)} but the reps are "
                           "example-level; use example, text, label or split")
    return _evaluate(predicate, examples, "example")


def rep_array(storage: Storage, rep: RepRecord) -> RepArray:
    return storage.open_rows(rep)


class Source:
    """The rows of one rep in one row space, readable block by block or by sample."""

    def __init__(self, array: RepArray, index: np.ndarray | None = None, matrix: np.ndarray | None = None):
        self.array = array
        self.index = index  # underlying rows (direct, subset) or None (all rows)
        self.matrix = matrix  # a pooled matrix (aligned spaces)

    @property
    def n(self) -> int:
        if self.matrix is not None:
            return len(self.matrix)
        return len(self.index) if self.index is not None else self.array.shape[0]

    def blocks(self, block_rows: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Rows in blocks aligned to ``block_rows`` of the underlying array, between
        underlying rows ``start`` and ``stop``; every chunk is decoded once."""
        if self.matrix is not None:
            stop = len(self.matrix) if stop is None else stop
            for s in range(start, stop, block_rows):
                yield self.matrix[s: min(stop, s + block_rows)]
            return
        stop = self.array.shape[0] if stop is None else stop
        for s in range(start, stop, block_rows):
            e = min(stop, s + block_rows)
            if self.index is None:
                yield self.array[s:e]
                continue
            lo, hi = np.searchsorted(self.index, [s, e])
            if hi > lo:
                yield self.array[s:e][self.index[lo:hi] - s]
            else:
                yield np.empty((0, self.array.shape[1]), dtype=self.array.value_dtype)

    def sample(self, positions: np.ndarray) -> np.ndarray:
        """Rows at positions of this space (e.g. a seeded sample), float64."""
        if self.matrix is not None:
            return np.asarray(self.matrix[positions], dtype=np.float64)
        rows = positions if self.index is None else self.index[positions]
        return self.array.rows(rows).astype(np.float64)

    @property
    def extent(self) -> int:
        """Number of underlying rows the blocks walk over."""
        return len(self.matrix) if self.matrix is not None else self.array.shape[0]


def _pool(array: RepArray, examples: np.ndarray, n_examples: int, how: str, keep: np.ndarray | None) -> np.ndarray:
    """Pool token rows to per-group vectors (``examples[i]`` = group of row i, -1 = dropped)."""
    out = np.zeros((n_examples, array.shape[1]), np.float64)
    counts = np.zeros(n_examples, np.int64)
    if how in ("first", "last"):
        valid = np.flatnonzero(examples >= 0)
        groups = examples[valid]
        if how == "first":
            first = valid[np.r_[True, groups[1:] != groups[:-1]]] if len(valid) else valid
        else:
            first = valid[np.r_[groups[1:] != groups[:-1], True]] if len(valid) else valid
        out[examples[first]] = array.rows(first)
        counts[examples[first]] = 1
        return out[counts > 0] if keep is None else out[keep]
    for start, block in array.iter_blocks():
        grp = examples[start: start + len(block)]
        mask = grp >= 0
        np.add.at(out, grp[mask], block[mask].astype(np.float64))
        counts += np.bincount(grp[mask], minlength=n_examples)
    present = counts > 0
    out[present] /= counts[present, None]
    return out[present] if keep is None else out[keep]


def _word_groups(storage: Storage, rep: RepRecord, texts: list[str]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """For each token row, the index of its (example, word) unit, and the unit keys."""
    tokens = storage.token_table(rep)
    ex = np.asarray(tokens.column("example"), dtype=np.int64)
    start = np.asarray(tokens.column("char_start").fill_null(-1), dtype=np.int64)
    special = np.asarray(tokens.column("special").fill_null(False), dtype=bool)
    if (start[~special] < 0).all():
        raise InvalidInput(f"{rep.label()} has no character spans in its token table, so align='word' cannot "
                           "map its tokens to words; use align='example:mean'")
    keys: list[tuple[int, int]] = []
    unit = np.full(len(ex), -1, np.int64)
    spans_by_example = [[m.span() for m in _WORD.finditer(t)] for t in texts]
    key_index: dict[tuple[int, int], int] = {}
    for i in range(len(ex)):
        if special[i] or start[i] < 0:
            continue
        spans = spans_by_example[ex[i]]
        w = _word_of(spans, int(start[i]))
        if w < 0:
            continue
        k = (int(ex[i]), w)
        if k not in key_index:
            key_index[k] = len(keys)
            keys.append(k)
        unit[i] = key_index[k]
    return unit, keys


def _word_of(spans: list[tuple[int, int]], pos: int) -> int:
    lo, hi = 0, len(spans) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        s, e = spans[mid]
        if pos < s:
            hi = mid - 1
        elif pos >= e:
            lo = mid + 1
        else:
            return mid
    return -1


def build_sources(storage: Storage, space: RowSpace, reps: list[RepRecord]) -> dict[tuple[str, int], Source]:
    """One :class:`Source` per rep of a row space, all with identical rows."""
    out: dict[tuple[str, int], Source] = {}
    if space.align is None:
        index = subset_rows(storage, reps[0], space.subset) if space.subset else None
        for rep in reps:
            out[rep.key] = Source(rep_array(storage, rep), index)
        return out
    first = reps[0]
    examples = _examples(storage, first)
    n_ex = examples.num_rows
    keep_ex = subset_rows(storage, first, space.subset) if space.subset and first.pooling != "token" else None
    if space.subset and keep_ex is None:
        keep_ex = _evaluate(space.subset, examples, "example")
    if space.align == "word":
        texts = examples.column("text").to_pylist()
        groups = {}
        for rep in reps:
            if rep.pooling != "token":
                raise InvalidInput(f"align='word' needs token-level reps; {rep.label()} is {rep.pooling}-level")
            groups[rep.key] = _word_groups(storage, rep, texts)
        common = set.intersection(*(set(keys) for _, keys in groups.values()))
        if keep_ex is not None:
            allowed = set(keep_ex.tolist())
            common = {k for k in common if k[0] in allowed}
        order = sorted(common)
        if len(order) < 2:
            raise InvalidInput("align='word' found fewer than 2 words shared by every rep's tokens")
        for rep in reps:
            unit, keys = groups[rep.key]
            pos = {k: i for i, k in enumerate(keys)}
            pooled = _pool(rep_array(storage, rep), unit, len(keys), "mean", np.arange(len(keys)))
            out[rep.key] = Source(rep_array(storage, rep), matrix=pooled[[pos[k] for k in order]])
        return out
    how = space.align.split(":", 1)[1]
    for rep in reps:
        array = rep_array(storage, rep)
        if rep.pooling != "token":
            matrix = array.to_numpy().astype(np.float64)
            out[rep.key] = Source(array, matrix=matrix if keep_ex is None else matrix[keep_ex])
            continue
        tokens = storage.token_table(rep)
        ex = np.asarray(tokens.column("example"), dtype=np.int64)
        keep = np.arange(n_ex) if keep_ex is None else keep_ex
        present = np.bincount(ex, minlength=n_ex) > 0
        if not present[keep].all():
            missing = int(keep[~present[keep]][0])
            raise InvalidInput(f"{rep.label()} has no tokens for example {missing}; it cannot be pooled to examples")
        out[rep.key] = Source(array, matrix=_pool(array, ex, n_ex, how, keep))
    return out
