"""The serve command: the HTTP API over one store (FastAPI on uvicorn)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

from actdb.cli._common import app, usage_error


@app.command()
def serve(store: Annotated[Path, typer.Argument(help="Path of the store directory.")],
          host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for all; then set "
                                            "an API key, or pass --no-auth).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
          api_key: Annotated[str | None, typer.Option("--api-key", envvar="ACTDB_API_KEY",
                                                         help="Require header X-API-Key: KEY on every route but "
                                                              "/healthz (or set ACTDB_API_KEY).")] = None,
          no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without an API key on a non-loopback "
                                                "address: anyone who reaches it may query the store.")] = False,
          public_docs: Annotated[bool, typer.Option("--public-docs", help="Serve /docs, /redoc and /openapi.json "
                                                    "without the API key.")] = False,
          read_only: Annotated[bool, typer.Option("--read-only", help="Open the store read-only: values are "
                                                  "computed but not cached.")] = False,
          sql_max_rows: Annotated[int, typer.Option(help="Row limit of POST /v1/sql.")] = 10_000,
          sql_timeout: Annotated[float, typer.Option(help="Time limit of POST /v1/sql, seconds.")] = 10.0,
          log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info") -> None:
    """Serve the HTTP API (OpenAPI docs at /docs). The server owns the store while it runs.

    Without an API key the server answers anyone who can reach it, so it only listens on a
    loopback address (127.0.0.1, ::1, localhost) unless --no-auth says that is intended.

    Example: ACTDB_API_KEY=secret actdb serve ./mystore --port 8000
    """
    import uvicorn

    from actdb.api import create_app

    if not 0 < port < 65536:
        raise usage_error(f"--port {port} is not a TCP port (1-65535)")
    if sql_max_rows < 1 or sql_timeout <= 0:
        raise usage_error("--sql-max-rows and --sql-timeout must be positive")
    if api_key is None and os.environ.get("ACTDB_API_KEY", None) is not None:
        api_key = os.environ["ACTDB_API_KEY"]  # set but empty: click reads that as unset
    check_auth(host, api_key, no_auth)
    application = create_app(store, api_key=api_key, read_only=read_only, sql_max_rows=sql_max_rows,
                             sql_timeout=sql_timeout, public_docs=public_docs)
    auth = "API key required" + (" (docs public)" if public_docs else "") if api_key else "NO authentication"
    typer.echo(f"actdb serving {store} on http://{host}:{port} (docs at /docs, {auth}"
               f"{', read-only' if read_only else ''})", err=True)
    uvicorn.run(application, host=host, port=port, log_level=log_level, workers=1)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_auth(host: str, api_key: str | None, no_auth: bool) -> None:
    """Refuse an empty key, and a keyless server on a non-loopback address without --no-auth."""
    if api_key is not None and not api_key.strip():
        raise usage_error("--api-key (or ACTDB_API_KEY) is empty: an empty key would let every request in. "
                          "Give a non-empty key, or leave both unset to serve without one")
    if api_key is not None and no_auth:
        raise usage_error("--no-auth and --api-key (or ACTDB_API_KEY) contradict each other: pick one")
    if api_key is None and not no_auth and not is_loopback(host):
        raise usage_error(f"--host {host} is reachable from other machines and no API key is set: anyone could "
                          "query the store. Set --api-key KEY (or ACTDB_API_KEY), or pass --no-auth if that "
                          "is intended")
