"""Pruning commands: ``rm`` (reps, checkpoints, models, datasets), ``du`` (disk usage) and
``cache clear`` (cached results and moments)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from actdb.cli._common import Format, app, emit, open_store, usage_error

StoreArg = Annotated[Path, typer.Argument(help="Path of the store directory.")]
Many = list[str] | None

cache_app = typer.Typer(name="cache", help="Manage a store's caches of computed values.\n\n"
                        "Example: actdb cache clear ./mystore --measure linear_cka", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(cache_app, name="cache")


@app.command()
def rm(store: StoreArg,
       model: Annotated[Many, typer.Option("--model", "-m", help="Model name or glob (repeatable).")] = None,
       checkpoint: Annotated[Many, typer.Option("--checkpoint", "-c", help="Checkpoint name or glob.")] = None,
       dataset: Annotated[Many, typer.Option("--dataset", "-d", help="Dataset name or glob.")] = None,
       site: Annotated[Many, typer.Option("--site", "-s", help="Site name or glob.")] = None,
       rep: Annotated[list[int] | None, typer.Option("--rep", "-r", help="Rep id (repeatable).")] = None,
       yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete; without it only the plan is shown.")] = False,
       ) -> None:
    """Remove reps and what refers to them (cached results and moments); --model alone also
    removes the models, --model/--checkpoint alone the checkpoints, --dataset alone the
    datasets with their texts and token tables. Shows what it will delete; deletes only with --yes.

    Example: actdb rm ./mystore --model pythia-70m --checkpoint 'step1*'   (then again with --yes)
    """
    if not any((model, checkpoint, dataset, site, rep)):
        raise usage_error("say what to remove: give at least one of --model, --checkpoint, --dataset, --site, "
                          "--rep (nothing is removed without a filter)")
    db = open_store(store, read_only=not yes, create=False)
    try:
        plan = db.rm(model=model, checkpoint=checkpoint, dataset=dataset, site=site, rep=rep, yes=False)
        if plan.empty:
            typer.echo("nothing to remove: no rep matches")
            return
        if plan.reps:
            emit([{"rep_id": r.id, "model": r.model, "checkpoint": r.checkpoint, "dataset": r.dataset,
                   "site": r.site, "pooling": r.pooling, "status": r.status, "bytes": r.nbytes} for r in plan.reps],
                 title="reps to remove")
        if not yes:
            typer.echo(plan.summary())
            typer.echo("dry run: nothing was deleted; run again with --yes to delete")
            return
        done = db.rm(model=model, checkpoint=checkpoint, dataset=dataset, site=site, rep=rep, yes=True)
    finally:
        db.close()
    typer.echo(done.summary())


@app.command()
def du(store: StoreArg,
       by: Annotated[str, typer.Option("--by", help="Group array bytes by model | checkpoint | site.")]
       = "checkpoint",
       fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
       output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE.")] = None) -> None:
    """Disk usage: array bytes by model, checkpoint or site, the catalog's size and the
    caches' rows and bytes.

    Example: actdb du ./mystore --by site
    """
    from actdb.store.prune import BY, human_bytes

    if by not in BY:
        raise usage_error(f"--by {by!r}: choose one of {', '.join(BY)}")
    db = open_store(store, create=False)
    try:
        rows = db.du(by=by)
    finally:
        db.close()
    if fmt == Format.table and output is None:
        rows = [{**r, "size": human_bytes(r["bytes"])} for r in rows]
    emit(rows, fmt, output, title="disk usage")


@cache_app.command("clear")
def cache_clear(store: StoreArg,
                measure: Annotated[Many, typer.Option("--measure", help="Only this measure's cached values "
                                                      "(name or glob; moments are kept).")] = None) -> None:
    """Delete cached measure values and cached per-rep moments (recomputed when next needed).

    Example: actdb cache clear ./mystore --measure linear_cka
    """
    for name in measure or ():
        if not any(ch in name for ch in "*?["):
            from actdb.query.measures import get_measure

            get_measure(name)  # an unknown measure: NotFound with the known ones
    db = open_store(store, read_only=False, create=False)
    try:
        cleared = db.clear_cache(measure=measure)
    finally:
        db.close()
    typer.echo(cleared.summary())
