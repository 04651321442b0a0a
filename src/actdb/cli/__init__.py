"""The ``actdb`` command line: thin commands over the library.

Every command takes the store path first, opens the database, calls one public method
and formats the result. Errors become one line on stderr: exit 2 for usage errors
(bad options, malformed filters), exit 1 for data errors (missing rep, corrupt store).
"""

from __future__ import annotations

import sys

import typer

from actdb.cli._common import app
from actdb.errors import ActdbError, InvalidInput

#: The modules of ``actdb.cli`` that define commands, in the order ``actdb --help`` lists
#: them. Loading one registers its commands on ``app`` (typer's decorators); nothing else
#: loads them: :func:`main` calls :func:`_load_optional_commands` first.
COMMAND_MODULES = ("store_cmds", "ingest_cmd", "query_cmds", "serve_cmd", "demo_cmd", "attach_cmds", "sites_cmd",
                   "prune_cmds")


def _load_optional_commands() -> None:
    """Load the modules of :data:`COMMAND_MODULES` (their heavy imports stay inside the
    commands); a module absent from this installation is skipped."""
    import importlib

    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"actdb.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"actdb.cli.{name}":
                raise


def _cli_message(exc: ActdbError) -> str:
    """The error's message as a shell user should read it: errors whose fix names an
    option (``reference='...'`` in Python) say the command-line flag instead."""
    for_face = getattr(exc, "for_face", None)
    return str(for_face("cli")) if callable(for_face) else str(exc)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``actdb`` script and ``python -m actdb``."""
    _load_optional_commands()
    try:
        # standalone mode: click reports usage errors itself (exit 2); ours arrive here
        app(args=argv, prog_name="actdb")
    except InvalidInput as exc:
        print(f"actdb: error: {_cli_message(exc)}", file=sys.stderr)
        sys.exit(2 if getattr(exc, "usage", False) else 1)
    except ActdbError as exc:
        print(f"actdb: error: {_cli_message(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("actdb: interrupted", file=sys.stderr)
        sys.exit(130)


__all__ = ["app", "main", "typer"]
