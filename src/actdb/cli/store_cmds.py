"""Store commands: init, ls, sql, verify, migrate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import actdb
from actdb.cli._common import Format, app, emit, open_store, usage_error

StoreArg = Annotated[Path, typer.Argument(help="Path of the store directory.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")]

LS_QUERIES = {
    "models": "SELECT model, family, architecture, width, depth, n_checkpoints FROM models ORDER BY model",
    "checkpoints": "SELECT model, checkpoint, step, tokens_seen, weights_hash, duplicate_of FROM checkpoints "
                   "ORDER BY model, step NULLS LAST, checkpoint",
    "datasets": "SELECT dataset, n_examples, dataset_hash FROM datasets ORDER BY dataset",
    "reps": "SELECT rep_id, model, checkpoint, dataset, site, layer, pooling, n_rows, dim, dtype FROM reps "
            "ORDER BY model, step NULLS LAST, checkpoint, layer, site, pooling",
    "results": "SELECT result_id, measure, value, n, model_a, checkpoint_a, site_a, model_b, checkpoint_b, site_b "
               "FROM dissimilarities ORDER BY result_id",
}


@app.command()
def init(store: StoreArg,
         catalog: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the catalog "
                                                         "(default: STORE/catalog.duckdb).")] = None) -> None:
    """Create an empty store.

    Example: actdb init ./mystore --catalog postgresql+psycopg://postgres@127.0.0.1/test
    """
    db = actdb.open(str(store), catalog_url=catalog)
    typer.echo(f"initialised {db.path} (schema {db.schema_revision()}, catalog {db.catalog.dialect})")


@app.command()
def ls(store: StoreArg,
       what: Annotated[str, typer.Argument(help="models | checkpoints | datasets | reps | results | "
                                            "stores")] = "reps",
       fmt: FormatOpt = Format.table, output: OutputOpt = None) -> None:
    """List what a store holds.

    Example: actdb ls ./mystore checkpoints --format csv
    """
    if what not in LS_QUERIES and what != "stores":
        raise usage_error(f"cannot list {what!r}; choose one of {', '.join(LS_QUERIES)}, stores")
    db = open_store(store)
    if what == "stores":  # attached stores (actdb attach), with whether each is still there
        rows = [{"name": a["name"], "path": a["path"], "resolved": a["resolved"],
                 "status": "ok" if a["ok"] else "missing"} for a in db.attachments()]
        import pyarrow as pa

        empty = pa.table({c: pa.array([], pa.string()) for c in ("name", "path", "resolved", "status")})
        emit(rows or empty, fmt, output, title="attached stores")
        return
    emit(db.sql(LS_QUERIES[what]), fmt, output, title=what)
    if what == "checkpoints" and fmt == Format.table:
        dups = db.duplicate_checkpoints()
        for c in dups:
            typer.echo(f"note: {c.model}/{c.name} has the same weights as {c.model}/{c.duplicate_of}")


@app.command()
def sql(store: StoreArg, query: Annotated[str, typer.Argument(help="One SELECT statement.")],
        fmt: FormatOpt = Format.table, output: OutputOpt = None,
        max_rows: Annotated[int, typer.Option(help="Fail if the result has more rows.")] = 1_000_000,
        timeout: Annotated[float, typer.Option(help="Stop the query after SECONDS (0: no limit).")] = 60.0,
        memory_limit: Annotated[str, typer.Option(help="Engine memory a query may use, e.g. 1GB.")] = "1GB",
        read_only: Annotated[bool, typer.Option("--read-only", help="Open the store read-only: values that "
                                                "dissim() computes are not cached.")] = False) -> None:
    """Run read-only SQL over the catalog views (models, checkpoints, datasets, examples,
    tokens, reps, results, dissimilarities); dissim(measure, rep_a, rep_b) computes and
    caches a measure, as db.sql and POST /v1/sql do.

    Example: actdb sql ./mystore "SELECT model, count(*) FROM reps GROUP BY model"
    """
    # the store is opened for writing (never created) so that dissim() caches what it computes;
    # the query itself still runs on a read-only connection
    db = open_store(store, read_only=read_only, create=False)
    emit(db.sql(query, max_rows=max_rows, timeout=timeout or None, memory_limit=memory_limit), fmt, output)


@app.command()
def verify(store: StoreArg,
           repair: Annotated[bool, typer.Option("--repair", help="Remove unfinished writes and orphan "
                                                "arrays; quarantine corrupt reps.")] = False) -> None:
    """Check every complete rep's shape and checksum.

    Example: actdb verify ./mystore --repair
    """
    db = open_store(store, read_only=not repair)
    report = db.verify(repair=repair)
    for line in report.repaired:
        typer.echo(f"repaired: {line}")
    for p in report.problems:
        typer.echo(f"{p.kind}: {p.message}")
    typer.echo(f"checked {report.checked} reps: {'clean' if report.clean else f'{len(report.problems)} problem(s)'}")
    if not report.clean:
        raise typer.Exit(1)


@app.command()
def migrate(store: StoreArg) -> None:
    """Upgrade the store's catalog schema to this actdb's version.

    Example: actdb migrate ./mystore
    """
    db = actdb.open(str(store))
    typer.echo(f"{db.path}: schema at {db.migrate()}")
