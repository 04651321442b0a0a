"""``actdb ingest``: run a model or a checkpoint sweep over texts into a store."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from actdb.cli._common import app, open_store, usage_error

if TYPE_CHECKING:
    from actdb.models import Site


@app.command()
def ingest(
    store: Annotated[Path, typer.Argument(help="Path of the store directory (created if new).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model folder or hub id (offline: local cache); "
                                       "with --checkpoint/--checkpoints-dir, also the hub id revisions refer to.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name (stored, or created from --texts).")],
    texts: Annotated[Path | None, typer.Option("--texts", "-t", help="Texts: .txt (one per line), .jsonl, "
                                                  ".csv or .parquet (UTF-8).")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of a .jsonl/.csv/.parquet file.")] = "text",
    label_column: Annotated[str | None, typer.Option(help="Label column, if any.")] = None,
    name: Annotated[str | None, typer.Option(help="Model name in the store (default: folder name or hub id).")] = None,
    checkpoint: Annotated[list[str] | None, typer.Option(
        "--checkpoint", "-c", help="NAME=PATH_OR_REVISION; repeat for a sweep.")] = None,
    checkpoints_dir: Annotated[Path | None, typer.Option(
        help="Folder whose checkpoint-*/step* subfolders are the checkpoints.")] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision of --model (one checkpoint).")] = None,
    site: Annotated[list[str] | None, typer.Option(
        "--site", "-s", help="hidden.*, hidden.N, hidden.-1 or a module path/glob ('*' within one dotted part, "
        "'**' across parts; see `actdb sites MODEL`); repeatable. Default hidden.*")] = None,
    pooling: Annotated[str, typer.Option(help="Comma-separated: token, mean, first, last.")] = "token",
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass (keep it when resuming).")] = 32,
    max_length: Annotated[int | None, typer.Option(help="Tokens per text; longer texts are truncated.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="Stored dtype: float16, bfloat16 or float32.")] = "float16",
    model_dtype: Annotated[str | None, typer.Option(help="Compute dtype (default: the checkpoint's).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Load the (first) model, print the sites the "
                                          "--site patterns match, and stop: nothing is written.")] = False,
) -> None:
    """Run a transformers model (or a checkpoint sweep) over a dataset and store its activations.

    Interrupted runs resume where they stopped; re-running a finished one does nothing.

    Examples:
      actdb ingest ./store --model ./minilm --dataset docs --texts docs.txt --pooling token,mean
      actdb ingest ./store --model pythia-tiny --dataset docs --checkpoints-dir ./runs --site 'hidden.*' --site '**.mlp.act'
      actdb ingest ./store --model ./minilm --dataset docs --texts docs.txt --site 'encoder.layer.*.output.dense' --dry-run

    Site globs: '*' matches within one dotted part, '**' across parts (list a model's sites
    with `actdb sites MODEL`). The matched sites are printed before the run starts.
    """  # noqa: E501 - the example command lines stay whole
    if checkpoint and checkpoints_dir:
        raise usage_error("give either --checkpoint (repeatable) or --checkpoints-dir, not both")
    checkpoints: object = checkpoint or (checkpoints_dir if checkpoints_dir else None)

    def show(sites: list[Site]) -> None:
        if dry_run or (not quiet and sys.stderr.isatty()):  # like the progress bar; the summary lists them too
            names = [s.name for s in sites]
            typer.echo(f"{len(names)} site(s) matched: {', '.join(names)}", err=not dry_run)
        if dry_run:
            raise _DryRun

    with _store_for(store, dry_run) as db:
        try:
            result = db.ingest(model, dataset, texts=texts, text_column=text_column, label_column=label_column,
                               name=name, checkpoints=checkpoints, revision=revision, sites=site or ["hidden.*"],
                               pooling=pooling, batch_size=batch_size, max_length=max_length, device=device,
                               dtype=dtype, model_dtype=model_dtype, quiet=quiet, on_sites=show)
        except _DryRun:
            typer.echo(f"dry run: nothing written to {store}")
            return
    typer.echo(result.summary())


class _DryRun(Exception):
    """Stops an ingest once its sites are printed (raised before anything is written)."""


@contextmanager
def _store_for(store: Path, dry_run: bool) -> Iterator[Any]:
    """The store to ingest into: opened for writing; for a dry run, read-only when it
    exists, else a throwaway empty store (so a dry run creates nothing at STORE)."""
    if not dry_run:
        db = open_store(store, read_only=False)
    elif (store / "actdb.json").is_file():
        db = open_store(store, read_only=True)
    else:
        with tempfile.TemporaryDirectory(prefix="actdb-dry-run-") as tmp:
            db = open_store(Path(tmp) / "store", read_only=False)
            try:
                yield db
            finally:
                db.close()
        return
    try:
        yield db
    finally:
        db.close()
