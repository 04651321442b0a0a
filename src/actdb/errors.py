"""The actdb exception hierarchy.

Every error actdb raises on purpose derives from :class:`ActdbError`. Leaves also
inherit the matching builtin, so ``except KeyError`` keeps working for callers
who do not know about actdb.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ActdbError(Exception):
    """Root of every error actdb raises on purpose."""


class InvalidInput(ActdbError, ValueError):
    """An argument, file or array that actdb cannot accept as given."""


class NotFound(ActdbError, KeyError):
    """A named model, checkpoint, dataset, rep, site or measure does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class AlreadyExists(ActdbError, ValueError):
    """Something with that identity is already stored (and stored data is immutable)."""


class NotAStore(ActdbError, FileNotFoundError):
    """A path that is not an actdb store."""


class StoreTooNew(ActdbError, RuntimeError):
    """The store was written by a newer actdb whose schema this version does not know."""


class StoreBusy(ActdbError, RuntimeError):
    """Another process holds the store's catalog for writing."""


class ReadOnly(ActdbError, PermissionError):
    """A write was attempted through a read-only handle or a read-only SQL connection."""


class CorruptStore(ActdbError, RuntimeError):
    """Stored data does not match its catalog record (checksum, shape, missing files)."""


class NonFinite(InvalidInput):
    """An array contains NaN or Inf values."""


class DtypeOverflow(InvalidInput):
    """Values exceed the range of the stored dtype."""


class UnsafeQuery(InvalidInput):
    """A SQL text that would write, read files, or run more than one statement."""


class UnderflowWarning(UserWarning):
    """Non-zero values too small for the stored dtype were stored as zero."""


class MeasureError(ActdbError, ValueError):
    """A measure cannot be computed on the given input (degenerate, too few rows, ...)."""


def close_matches(value: str, choices: Iterable[str], n: int = 5) -> str:
    """A short 'did you mean' / 'known' fragment for error messages."""
    choices = sorted(set(choices))
    if not choices:
        return "there are none yet"
    close = difflib.get_close_matches(value, choices, n=n, cutoff=0.5)
    if close:
        return "did you mean " + ", ".join(repr(c) for c in close) + "?"
    shown = ", ".join(repr(c) for c in choices[:10])
    more = f" (and {len(choices) - 10} more)" if len(choices) > 10 else ""
    return f"known: {shown}{more}"
