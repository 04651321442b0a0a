"""``actdb sites MODEL``: what a model offers to capture, before a long ingest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from actdb.cli._common import Format, app, emit


@app.command()
def sites(model: Annotated[str, typer.Argument(help="Model folder or hub id (offline: local cache).")],
          match: Annotated[list[str] | None, typer.Option(
              "--match", "-s", help="Only the sites these patterns select, as `actdb ingest --site` would "
              "('*' within one dotted part, '**' across parts); repeatable.")] = None,
          revision: Annotated[str | None, typer.Option(help="Hub revision of MODEL.")] = None,
          text: Annotated[str | None, typer.Option(help="The short text the one forward pass runs on "
                                                      "(shapes are for it).")] = None,
          fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
          output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE.")] = None) -> None:
    """List a model's capturable sites: hidden.N and module paths, with their layer
    number (what `layer=` selects), stored width and output shape on one short text.

    Layer numbers: hidden.N has layer N (hidden.0 = embeddings, hidden.N = output of block
    N-1 counted from 0); a module inside block k (path index k) has layer k + 1, the layer
    of that block's output, so `layer=4` selects hidden.4 and the modules of block 3.

    Example: actdb sites ./all-MiniLM-L6-v2 --match 'encoder.layer.*.output.dense'
    """
    from actdb.models import SAMPLE_TEXT, list_sites, load_model, resolve_sites

    loaded = load_model(model, revision)
    rows = list_sites(loaded, text or SAMPLE_TEXT)
    if match:
        chosen = {s.name for s in resolve_sites(loaded, match)}
        rows = [r for r in rows if r["site"] in chosen]
    title = (f"{loaded.architecture}: {len(rows)} site(s), {loaded.n_layers} blocks "
             f"(blocks at {loaded.blocks}); shapes on {text or SAMPLE_TEXT!r}")
    emit(rows, fmt, output, title=title)
