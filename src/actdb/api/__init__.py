"""actdb.api: the HTTP interface (FastAPI), served by ``actdb serve``.

``create_app(store, api_key=..., read_only=...)`` builds the app over an open
:class:`~actdb.Database` (or a store path). Importing this package does not import
FastAPI; :func:`create_app` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(store: Any, **kwargs: Any) -> FastAPI:
    """The actdb HTTP app; see :func:`actdb.api.app.create_app`."""
    from actdb.api.app import create_app as _create_app

    return _create_app(store, **kwargs)


__all__ = ["create_app"]
