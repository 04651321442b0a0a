"""The catalog's clock: naive UTC timestamps, as every ``*_at`` column stores them."""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
