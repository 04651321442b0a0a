"""BI-ready exports: the flat catalog views as Parquet or CSV files plus ``schema.json``.

``export_views(db, "out/")`` writes ``dissimilarities``, ``reps``, ``models`` and
``checkpoints`` (one file each) and a ``schema.json`` describing every column (name, type,
meaning), so a BI tool (Power BI, Tableau, Superset, DuckDB, pandas) loads them directly.
The column descriptions here are the documented contract of the views (see
``docs/interfaces.md``); a test checks that every column of every exported view has one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from actdb.errors import InvalidInput

ExportFormat = Literal["parquet", "csv"]
DEFAULT_VIEWS = ("dissimilarities", "reps", "models", "checkpoints")

VIEW_DOCS: dict[str, str] = {
    "dissimilarities": "One row per cached result: a measure's value for a pair of reps, with both reps' "
                       "model, checkpoint, site and layer joined in. The main table for dashboards.",
    "reps": "One row per complete stored representation (model, checkpoint, dataset, site, pooling).",
    "models": "One row per model.",
    "checkpoints": "One row per checkpoint (a set of weights of a model).",
}

_SIDE = {
    "model": "Model name of rep {S}.",
    "checkpoint": "Checkpoint name of rep {S} (e.g. step1000, final).",
    "step": "Training step of rep {S}'s checkpoint; null when unknown.",
    "site": "Where rep {S} was read: hidden.0 (embeddings) ... hidden.L (residual stream after block L), "
            "or a module path.",
    "layer": "Layer number of rep {S}'s site (the L of hidden.L); null for module sites without one.",
    "pooling": "Rows of rep {S}: token (one per token) or an example-level pooling (mean, first, last).",
}

COLUMN_DOCS: dict[str, dict[str, str]] = {
    "dissimilarities": {
        "result_id": "Stable id of the result row.",
        "measure": "Measure name (linear_cka, procrustes, rsa, ...; see the measures table).",
        "kind": "similarity (higher = more alike, CKA/CCA in 0-1) or distance (0 = identical).",
        "value": "The measure's value for the pair (float64).",
        "stderr": "Jackknife standard error over 20 row shards when it was asked for (stderr=True, moments-route "
                  "measures); null otherwise.",
        "n": "Number of rows (tokens or examples) the value was computed on, after subset and alignment.",
        **{f"{k}_a": v.format(S="A") for k, v in _SIDE.items()},
        "rep_a": "rep_id of rep A (joins reps.rep_id); negative for a rep of another store (see store_a).",
        **{f"{k}_b": v.format(S="B") for k, v in _SIDE.items()},
        "rep_b": "rep_id of rep B (joins reps.rep_id); negative for a rep of another store (see store_b).",
        "dataset": "Dataset (the texts) both reps were computed on.",
        "subset": "Row subset and alignment the value was computed on (SQL predicate / align mode); "
                  "null for all rows.",
        "params": "The measure's parameters as a JSON object (defaults filled in).",
        "extra": "JSON details of the computation (route: moments | gram; sample size and seed for "
                 "sampled measures).",
        "seconds": "Compute time of the value, in seconds.",
        "computed_at": "When the value was computed (UTC).",
        "store_a": "Store holding rep A: 'local', or the location of an attached store (cross-store results).",
        "store_b": "Store holding rep B: 'local', or the location of an attached store.",
    },
    "reps": {
        "rep_id": "Stable id of the rep.",
        "model": "Model name.",
        "family": "Model family (e.g. pythia); null when not given.",
        "architecture": "Architecture name (e.g. GPTNeoXForCausalLM); null when not given.",
        "width": "Hidden size of the model; null when not given.",
        "depth": "Number of blocks of the model; null when not given.",
        "checkpoint": "Checkpoint name.",
        "step": "Training step of the checkpoint; null when unknown.",
        "tokens_seen": "Training tokens seen at the checkpoint; null when unknown.",
        "dataset": "Dataset name.",
        "dataset_hash": "Content hash of the dataset's texts (equal hashes = same texts, across stores).",
        "tokenizer": "Tokenizer that produced the token rows; null for arrays written without one.",
        "site": "Where the activations were read (hidden.L or a module path).",
        "layer": "Layer number of the site; null when none.",
        "pooling": "token (one row per token) or an example-level pooling.",
        "n_rows": "Number of rows (tokens or examples).",
        "dim": "Number of columns (the site's width).",
        "dtype": "Stored dtype (float32, float16, bfloat16).",
        "nbytes": "Stored size before compression, in bytes.",
        "checksum": "Checksum of the stored array.",
        "stat_mean": "Mean of all values.",
        "stat_std": "Standard deviation of all values.",
        "stat_absmax": "Largest absolute value.",
        "created_at": "When the write started (UTC).",
        "completed_at": "When the rep became complete (UTC).",
    },
    "models": {
        "model_id": "Stable id of the model.",
        "model": "Model name.",
        "family": "Model family; null when not given.",
        "architecture": "Architecture name; null when not given.",
        "width": "Hidden size; null when not given.",
        "depth": "Number of blocks; null when not given.",
        "n_params": "Number of parameters; null when not given.",
        "meta": "Free-form JSON metadata.",
        "created_at": "When the model was registered (UTC).",
        "n_checkpoints": "Number of checkpoints stored for the model.",
    },
    "checkpoints": {
        "checkpoint_id": "Stable id of the checkpoint.",
        "model": "Model name.",
        "checkpoint": "Checkpoint name.",
        "step": "Training step; null when unknown.",
        "tokens_seen": "Training tokens seen; null when unknown.",
        "weights_hash": "Hash of the weights; equal hashes mean identical weights.",
        "source": "Where the weights came from (path, hub id and revision).",
        "created_at": "When the checkpoint was registered (UTC).",
        "duplicate_of": "Name of an earlier checkpoint of the same model with identical weights, if any.",
    },
}


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_views` wrote: one file per view, row counts, the schema file."""

    directory: Path
    files: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    schema_file: Path | None = None


def _type_name(arrow_type: Any) -> str:
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_null(t):
        return "null"
    return "string"


def describe_view(name: str, table: Any) -> dict[str, Any]:
    """The schema description of one exported view (its entry in ``schema.json``)."""
    docs = COLUMN_DOCS.get(name, {})
    return {
        "description": VIEW_DOCS.get(name, ""),
        "rows": table.num_rows,
        "columns": [{"name": f.name, "type": _type_name(f.type), "arrow_type": str(f.type),
                     "description": docs.get(f.name, "")} for f in table.schema],
    }


def export_views(db: Any, to: str | Path, *, fmt: ExportFormat = "parquet",
                 views: tuple[str, ...] | list[str] = DEFAULT_VIEWS) -> ExportReport:
    """Write each view of ``views`` to ``to/<view>.<fmt>`` and ``to/schema.json``.

    ``fmt``: ``parquet`` (typed; best for BI tools and DuckDB/pandas) or ``csv`` (UTF-8, a
    header row, ISO timestamps, empty field for null).
    """
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if fmt not in ("parquet", "csv"):
        raise InvalidInput(f"export format {fmt!r} is not supported; choose parquet or csv")
    unknown = [v for v in views if v not in COLUMN_DOCS]
    if unknown:
        raise InvalidInput(f"cannot export view(s) {', '.join(map(repr, unknown))}; choose from "
                           f"{', '.join(COLUMN_DOCS)}")
    out = Path(to)
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"--to {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    report = ExportReport(out)
    schema: dict[str, Any] = {
        "format": fmt,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "store": str(getattr(db, "path", "")),
        "schema_revision": db.schema_revision() if hasattr(db, "schema_revision") else None,
        "views": {},
    }
    for name in views:
        table = db.sql(f"SELECT * FROM {name}", max_rows=None)
        path = out / f"{name}.{fmt}"
        tmp = path.with_name(path.name + ".tmp")
        if fmt == "parquet":
            pq.write_table(table, tmp)
        else:
            pcsv.write_csv(table, tmp)
        tmp.replace(path)
        report.files[name] = path
        report.rows[name] = table.num_rows
        schema["views"][name] = {"file": path.name, **describe_view(name, table)}
    schema_path = out / "schema.json"
    schema_path.write_text(json.dumps(schema, indent=2) + "\n")
    return ExportReport(out, report.files, report.rows, schema_path)


__all__ = ["COLUMN_DOCS", "DEFAULT_VIEWS", "ExportReport", "describe_view", "export_views"]
