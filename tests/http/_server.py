"""Helpers for the HTTP tests: a real uvicorn server on 127.0.0.1 in a thread, and the store.

The store is the query tests' one (one model, three checkpoints, four layers); the server
runs the app that ``actdb serve`` runs, on a socket bound to a free port.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import actdb

API_KEY = "test-key-0123456789"


def query_fixtures() -> Any:
    """tests/query/query_data.py as a module (its ``fill`` builds the synthetic store)."""
    path = Path(__file__).parents[1] / "query" / "query_data.py"
    spec = importlib.util.spec_from_file_location("actdb_tests_query_data", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Served:
    url: str
    key: str | None
    app: Any
    store: Path

    def client(self, *, key: bool = True, timeout: float = 30.0) -> httpx.Client:
        headers = {"X-API-Key": self.key} if key and self.key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


class ServerThread:
    """uvicorn.Server on a pre-bound socket, run in a daemon thread."""

    def __init__(self, app: Any):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def make_store(path: Path, *, warm: bool = True) -> Path:
    q = query_fixtures()
    db = actdb.open(str(path))
    q.fill(db)
    if warm:  # cache some results, so /v1/results has rows
        db.reps(checkpoint="final").compare(measure=["linear_cka", "procrustes"]).compute()
    db.close()
    return path


def serve(store: Path | actdb.Database, **kwargs: Any) -> Iterator[Served]:
    from actdb.api import create_app

    app = create_app(store, **kwargs)
    with ServerThread(app) as url:
        yield Served(url, kwargs.get("api_key"), app, Path(getattr(store, "path", store)))
