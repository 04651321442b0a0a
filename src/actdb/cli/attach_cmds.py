"""Attach commands: mount another project's store read-only, as part of this store's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from actdb.cli._common import app, open_store

StoreArg = Annotated[Path, typer.Argument(help="Path of the store directory.")]


@app.command()
def attach(store: StoreArg,
           other: Annotated[str, typer.Argument(help="Path of the other store (relative to the current "
                                                "directory; recorded relative to STORE).")],
           name: Annotated[str, typer.Option("--name", "-n", help="Name to select it by: --a 'store=NAME,...'.")],
           catalog: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the other store's catalog, "
                                                          "when its actdb.json does not name it.")] = None) -> None:
    """Attach another store read-only under a name, for every later command, Python
    session (actdb.open) and `actdb serve` of STORE.

    Example: actdb attach ./mystore ../teamb/store --name teamb
             actdb compare ./mystore --a 'model=mine' --b 'store=teamb,model=theirs' --align example:mean
    """
    db = open_store(store, read_only=False)
    try:
        db.attach(other, name=name, catalog_url=catalog, persist=True)
        entry = next(a for a in db.attachments() if a["name"] == name)
    finally:
        db.close()
    typer.echo(f"attached {entry['resolved']} to {db.path} as {name!r} (read-only; recorded as {entry['path']!r})")


@app.command()
def detach(store: StoreArg, name: Annotated[str, typer.Argument(help="Name of the attached store.")]) -> None:
    """Remove an attached store from STORE's configuration (the other store is untouched).

    Example: actdb detach ./mystore teamb
    """
    db = open_store(store, read_only=False)
    try:
        db.detach(name)
    finally:
        db.close()
    typer.echo(f"detached {name!r} from {db.path}")
