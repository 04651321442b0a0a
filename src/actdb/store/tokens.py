"""Token tables: parsing and validating the (row -> example, position, token) map."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

from actdb.errors import InvalidInput

TOKEN_COLUMNS: dict[str, pa.DataType] = {
    "example": pa.int32(), "position": pa.int32(), "token_id": pa.int32(), "token": pa.string(),
    "char_start": pa.int32(), "char_end": pa.int32(), "special": pa.bool_(),
}
REQUIRED = ("example", "position", "token_id")


def parse_token_table(tokens: Any, *, n_examples: int) -> pa.Table:
    """A token table from an Arrow table, a pandas DataFrame or a dict of columns.

    Rows are the rep's rows, in order. Required columns: ``example``, ``position``,
    ``token_id``; optional: ``token``, ``char_start``, ``char_end``, ``special``.
    Examples must be in ``[0, n_examples)`` and non-decreasing (grouped by example).
    """
    table = _strip_row_column(_as_table(tokens))
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise InvalidInput(f"token table lacks column(s) {missing}; required: {list(REQUIRED)}")
    unknown = [c for c in table.column_names if c not in TOKEN_COLUMNS]
    if unknown:
        raise InvalidInput(f"token table has unknown column(s) {unknown}; known: {list(TOKEN_COLUMNS)}")
    n = table.num_rows
    if n == 0:
        raise InvalidInput("token table is empty")
    cols = _typed_columns(table)
    ex = cols["example"].to_numpy()
    if ex.min() < 0 or ex.max() >= n_examples:
        bad = int(ex.max()) if ex.max() >= n_examples else int(ex.min())
        raise InvalidInput(f"token table refers to example {bad}, outside the dataset's {n_examples} examples")
    if n > 1 and (np.diff(ex) < 0).any():
        raise InvalidInput("token table rows must be grouped by example in increasing order")
    return pa.table({"row": pa.array(np.arange(n, dtype=np.int64)), **cols})


def _as_table(tokens: Any) -> pa.Table:
    """An Arrow table from an Arrow table, a pandas DataFrame or a dict of columns."""
    if isinstance(tokens, pa.Table):
        return tokens
    if isinstance(tokens, dict):
        try:
            return pa.table(tokens)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidInput(f"token table columns do not form a table: {exc}") from None
        except UnicodeEncodeError as exc:  # a lone surrogate in the token texts
            raise InvalidInput(f"token table text is not valid UTF-8 (lone surrogate {exc.object[exc.start]!r} "
                               f"at character {exc.start} of {exc.object[:40]!r}); fix the token texts") from None
    if hasattr(tokens, "to_dict") and hasattr(tokens, "columns"):
        return pa.Table.from_pandas(tokens, preserve_index=False)
    raise InvalidInput(f"tokens must be a pyarrow Table, pandas DataFrame or dict of columns, "
                       f"not {type(tokens).__name__}")


def _strip_row_column(table: pa.Table) -> pa.Table:
    """An already-parsed table without its ``row`` column, which must be 0..n-1 in order."""
    if "row" not in table.column_names:
        return table
    rows = np.asarray(table.column("row"))
    if not np.array_equal(rows, np.arange(len(rows))):
        raise InvalidInput("token table column 'row' must be 0, 1, 2, ... in order")
    return table.drop_columns(["row"])


def _typed_columns(table: pa.Table) -> dict[str, Any]:
    """Every known column cast to its type (absent ones null; ``special`` False); the
    required ones and ``special`` without missing values."""
    n = table.num_rows
    cols: dict[str, Any] = {}
    for name, typ in TOKEN_COLUMNS.items():
        if name in table.column_names:
            try:
                cols[name] = table.column(name).cast(typ)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInput(f"token column {name!r} cannot be read as {typ}: {exc}") from None
        elif name == "special":
            cols[name] = pa.array(np.zeros(n, dtype=bool))
        else:
            cols[name] = pa.nulls(n, typ)
    for name in (*REQUIRED, "special"):
        if cols[name].null_count:
            raise InvalidInput(f"token column {name!r} has {cols[name].null_count} missing values")
    return cols


def token_table_hash(table: pa.Table) -> str:
    h = hashlib.sha256()
    for name in ("example", "position", "token_id", "char_start", "char_end", "special"):
        col = table.column(name)
        h.update(name.encode())
        h.update(np.asarray(col.fill_null(-1) if col.type != pa.bool_() else col.fill_null(False)).tobytes())
    return "sha256:" + h.hexdigest()
