"""Text sources for ingest: lists, files (.txt, .jsonl, .csv, .parquet), dataset objects.

Every source becomes a :class:`Texts` (texts, optional labels, a name hint). Empty
texts are refused: an empty string has no tokens for most tokenizers, hence no
token rows and no pooled vector; the error names the offending examples so they can
be dropped.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actdb.errors import InvalidInput, NotFound
from actdb.store.parse import check_text

SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")


@dataclass(frozen=True)
class Texts:
    texts: list[str]
    labels: list[Any] | None = None
    name: str | None = None  # a default dataset name (file stem), if the source has one


def load_texts(source: Any, *, text_column: str = "text", label_column: str | None = None) -> Texts:
    """Read texts from a list of strings, a file path, or a table-like object.

    Files: ``.txt`` (one text per line), ``.jsonl`` / ``.csv`` / ``.parquet`` (a
    ``text_column`` and an optional ``label_column``); all UTF-8. Table-like objects:
    a ``datasets.Dataset``, a pyarrow Table or a pandas DataFrame (anything indexable by
    column name that lists its columns in ``column_names`` or ``columns``).
    """
    if isinstance(source, (str, os.PathLike)):
        return _from_file(Path(source), text_column, label_column)
    if isinstance(source, dict):
        raise InvalidInput("texts must be a list of strings, a file path or a dataset object, not a dict")
    columns = getattr(source, "column_names", None)
    if columns is None and hasattr(source, "columns") and hasattr(source, "__getitem__"):
        columns = [str(c) for c in source.columns]
    if columns is not None:
        return _from_table(source, list(columns), text_column, label_column)
    if isinstance(source, (list, tuple)):
        return Texts(check_texts(list(source), "texts"))
    raise InvalidInput(f"cannot read texts from a {type(source).__name__}; give a list of strings, a "
                       f"{'/'.join(SUFFIXES)} file or a datasets.Dataset")


def check_texts(texts: Sequence[Any], where: str) -> list[str]:
    """Refuse an empty list, non-strings, text that is not valid UTF-8 (a lone surrogate,
    e.g. from a JSON ``"\\ud800"`` escape) or holds NUL, and empty strings (naming the examples)."""
    if len(texts) == 0:
        raise InvalidInput(f"{where} has no texts; give at least one")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InvalidInput(f"{where}: text {bad[0]} is {type(texts[bad[0]]).__name__} {texts[bad[0]]!r:.40}, "
                           f"not a string ({len(bad)} such)")
    for i, t in enumerate(texts):
        check_text(t, f"text {i} of {where}")
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        raise InvalidInput(f"{where} has {len(empty)} empty text(s) (example {shown}); an empty text has no "
                           "tokens and no pooled vector: drop them before ingesting")
    return list(texts)


def _column(table: Any, name: str) -> list[Any]:
    col = table[name]
    if hasattr(col, "to_pylist"):
        return list(col.to_pylist())
    if hasattr(col, "tolist"):
        return list(col.tolist())
    return list(col)


def _from_table(table: Any, columns: list[str], text_column: str, label_column: str | None,
                where: str | None = None, name: str | None = None) -> Texts:
    where = where or f"{type(table).__name__}"
    for col, what in ((text_column, "text"), (label_column, "label")):
        if col is not None and col not in columns:
            raise InvalidInput(f"{where} has no {what} column {col!r}; its columns: "
                               f"{', '.join(map(repr, columns[:20]))}. Pick one with text_column= / --text-column")
    texts = check_texts(_column(table, text_column), where)
    labels = _column(table, label_column) if label_column else None
    return Texts(texts, labels, name)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"{path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                           f"(line {line}); convert it, e.g. `iconv -f latin1 -t utf-8 {path.name}`") from None


def _from_file(path: Path, text_column: str, label_column: str | None) -> Texts:
    if not path.exists():
        raise NotFound(f"text file {str(path)!r} does not exist")
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder; give a {'/'.join(SUFFIXES)} file")
    suffix = path.suffix.lower()
    where, name = str(path), path.stem
    if suffix == ".txt":
        lines = _read_utf8(path).splitlines()
        return Texts(check_texts(lines, where), None, name)
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(_read_utf8(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path} line {i} is not JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise InvalidInput(f"{path} line {i} is a JSON {type(row).__name__}, not an object")
            if text_column not in row:
                raise InvalidInput(f"{path} line {i} has no text column {text_column!r}; its keys: "
                                   f"{', '.join(map(repr, list(row)[:20]))}. "
                                   "Pick one with text_column= / --text-column")
            rows.append(row)
        columns = list(rows[0]) if rows else [text_column]
        if label_column and rows and any(label_column not in r for r in rows):
            columns = [c for c in columns if c != label_column]
        table = {c: [r.get(c) for r in rows] for c in {*columns, text_column}}
        return _from_table(table, columns, text_column, label_column, where, name)
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(_read_utf8(path), newline=""))
        columns = list(reader.fieldnames or [])
        rows = list(reader)
        table = {c: [r.get(c) for r in rows] for c in columns}
        return _from_table(table, columns, text_column, label_column, where, name)
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidInput(f"{path} is not a readable parquet file: {exc}") from None
        wanted = [c for c in (text_column, label_column) if c is not None and c in schema.names]
        table = pq.read_table(path, columns=wanted)
        if text_column in schema.names and not pa.types.is_string(schema.field(text_column).type) \
                and not pa.types.is_large_string(schema.field(text_column).type):
            raise InvalidInput(f"{path}: column {text_column!r} has type {schema.field(text_column).type}, not string")
        return _from_table(table, list(schema.names), text_column, label_column, where, name)
    raise InvalidInput(f"cannot read texts from {path.name!r}: the suffix {suffix or '(none)'!r} is not one of "
                       f"{', '.join(SUFFIXES)}")


def docstring_texts(n: int, *, seed: int = 0, min_words: int = 4) -> list[str]:
    """``n`` English-like texts from the docstrings of Python's standard library (offline,
    deterministic for a Python version, whatever the process imported before): sentences, cycled
    with a seeded shuffle."""
    import inspect
    import random
    import re
    import warnings

    modules = ["builtins", "collections", "json", "os", "pathlib", "re", "string", "textwrap", "itertools",
               "functools", "argparse", "logging", "datetime", "decimal", "fractions", "random", "statistics",
               "csv", "email", "unittest", "subprocess", "threading", "socket", "inspect", "shutil", "tarfile"]
    sentences: list[str] = []
    seen: set[str] = set()
    for name in modules:
        module = __import__(name, fromlist=["_"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # submodules are left out: which of them a package shows (email.mime, logging.handlers)
            # depends on what the process imported before, and the texts must not
            objects = [module] + [v for a in sorted(dir(module)) if not a.startswith("_")
                                  and not inspect.ismodule(v := getattr(module, a))]
        for obj in objects:
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str):
                continue
            for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if len(s.split()) >= min_words and s not in seen:
                    seen.add(s)
                    sentences.append(s)
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        batch = sentences[:]
        rng.shuffle(batch)
        out.extend(batch)
    return out[:n]
