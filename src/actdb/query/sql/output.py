"""How a SQL result leaves actdb as CSV: nested values (lists, maps, structs) as JSON text."""

from __future__ import annotations

import math

import pyarrow as pa


def _nested(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
            or pa.types.is_map(kind) or pa.types.is_struct(kind) or pa.types.is_union(kind))


def csv_compatible(table: pa.Table) -> pa.Table:
    """``table`` with list, map and struct columns as JSON text (CSV has no nested values)."""
    import json

    if not any(_nested(t) for t in table.schema.types):
        return table
    columns = []
    for column in table.columns:
        if _nested(column.type):
            values = [None if v is None else json.dumps(_jsonable(v), default=str, allow_nan=False)
                      for v in column.to_pylist()]
            column = pa.chunked_array([pa.array(values, pa.string())])
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, tuple) and len(v) == 2 for v in value) and value and isinstance(value, list) \
                and not isinstance(value[0], list):
            return {str(k): _jsonable(v) for k, v in value}  # an Arrow map: (key, value) pairs
        return [_jsonable(v) for v in value]
    return value
