"""HTTP test fixtures: a real uvicorn server over a small synthetic store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _server import API_KEY, Served, make_store, serve


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server with an API key and small SQL limits over a warmed store."""
    store = make_store(tmp_path_factory.mktemp("http") / "s")
    yield from serve(store, api_key=API_KEY, sql_max_rows=100, sql_timeout=1.0)
