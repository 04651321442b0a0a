"""``actdb demo``: the motivating study in miniature, end to end, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from actdb.cli._common import app


@app.command()
def demo(store: Annotated[Path, typer.Argument(help="Store directory (created if missing).")] = Path("actdb-demo"),
         quick: Annotated[bool, typer.Option("--quick", help="Smaller models and fewer texts (under 2 minutes; "
                                                              "what CI runs).")] = False) -> None:
    """Train tiny GeLU/SoLU models, ingest them and all-MiniLM-L6-v2, compare them (CKA,
    stitching) and write STORE/report/index.html. Re-running reuses everything stored.

    Example: actdb demo ./actdb-demo --quick
    """
    from actdb.demo import run_demo

    summary = run_demo(store, quick=quick, log=typer.echo)
    typer.echo("")
    typer.echo(summary.text())
