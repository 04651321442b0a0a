"""The serve command: the HTTP API over one store (FastAPI on uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from actdb.cli._common import app, usage_error


@app.command()
def serve(store: Annotated[Path, typer.Argument(help="Path of the store directory.")],
          host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for all; then set "
                                            "an API key).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
          api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="ACTDB_API_KEY",
                                                         help="Require header X-API-Key: KEY on every route but "
                                                              "/healthz (or set ACTDB_API_KEY).")] = None,
          read_only: Annotated[bool, typer.Option("--read-only", help="Open the store read-only: values are "
                                                  "computed but not cached.")] = False,
          sql_max_rows: Annotated[int, typer.Option(help="Row limit of POST /v1/sql.")] = 10_000,
          sql_timeout: Annotated[float, typer.Option(help="Time limit of POST /v1/sql, seconds.")] = 10.0,
          log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info") -> None:
    """Serve the HTTP API (OpenAPI docs at /docs). The server owns the store while it runs.

    Example: ACTDB_API_KEY=secret actdb serve ./mystore --port 8000
    """
    import uvicorn

    from actdb.api import create_app

    if not 0 < port < 65536:
        raise usage_error(f"--port {port} is not a TCP port (1-65535)")
    if sql_max_rows < 1 or sql_timeout <= 0:
        raise usage_error("--sql-max-rows and --sql-timeout must be positive")
    application = create_app(store, api_key=api_key or None, read_only=read_only, sql_max_rows=sql_max_rows,
                             sql_timeout=sql_timeout)
    typer.echo(f"actdb serving {store} on http://{host}:{port} (docs at /docs"
               f"{', API key required' if api_key else ''}{', read-only' if read_only else ''})", err=True)
    uvicorn.run(application, host=host, port=port, log_level=log_level, workers=1)
