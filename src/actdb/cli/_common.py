"""Shared pieces of the CLI: the app, store opening, output formatting."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
import typer

import actdb
from actdb.errors import InvalidInput

app = typer.Typer(
    name="actdb",
    help="actdb: an activation database for language models. Every command takes the store path first.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def usage_error(message: str) -> InvalidInput:
    """An InvalidInput that the CLI boundary reports with exit code 2."""
    exc = InvalidInput(message)
    exc.usage = True  # type: ignore[attr-defined]
    return exc


def open_store(store: Path, *, read_only: bool = True, catalog: str | None = None,
               create: bool = True) -> actdb.Database:
    """Open STORE; ``create=False``: an error instead of a new store where there is none."""
    if not create:
        return actdb.Database(str(store), catalog_url=catalog, read_only=read_only, create=False)
    return actdb.open(str(store), catalog_url=catalog, read_only=read_only)


def rows_to_table(rows: pa.Table | list[dict[str, Any]]) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if not rows:
        return pa.table({})
    return pa.Table.from_pylist(rows)


def emit(rows: pa.Table | list[dict[str, Any]], fmt: Format = Format.table, output: Path | None = None,
         *, title: str | None = None) -> None:
    """Write rows as a human table (default), CSV, JSON lines-free array, or Parquet."""
    table = rows_to_table(rows)
    if fmt == Format.parquet:
        if output is None:
            raise usage_error("--format parquet needs -o FILE")
        import pyarrow.parquet as pq

        pq.write_table(table, output)
        return
    if fmt == Format.csv:
        import pyarrow.csv as pcsv

        from actdb.query.sql import csv_compatible

        table = csv_compatible(table)  # list/map/struct columns as JSON text
        sink = output.open("wb") if output else sys.stdout.buffer
        pcsv.write_csv(table, sink)
        if output:
            sink.close()
        else:
            sys.stdout.flush()
        return
    if fmt == Format.json:
        text = json.dumps(table.to_pylist(), default=str, indent=1)
        (output.write_text(text + "\n") if output else print(text))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=output.open("w") if output else None,
                      width=None if (output is None and sys.stdout.isatty()) else 200)
    t = Table(title=None if title is None else Text(title), show_lines=False)
    for name in table.column_names:
        t.add_column(Text(name), overflow="fold")
    for row in table.to_pylist():
        t.add_row(*[Text(_cell(v)) for v in row.values()])  # Text: values are never read as markup
    console.print(t)
    if not table.num_rows:
        console.print("(no rows)")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return f"<{len(data):,} bytes: {data[:16].hex()}{'…' if len(data) > 16 else ''}>"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)
