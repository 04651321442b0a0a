"""The catalog's clock: naive UTC timestamps, as every ``*_at`` column stores them."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
