"""What a read-only query that calls ``dissim(measure, rep_a, rep_b)`` needs from its caller.

The catalog engines answer each call from the cached values in the ``result`` table
(default parameters, all rows; both orientations for a symmetric measure) and record
the calls that find none. The caller, which knows the measures, supplies a
:class:`Lookup`: the default parameters of every measure, how to compute the missing
values (one plan), and how to point the query's calls at the engine's function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

#: One ``dissim()`` call: (measure, rep_a, rep_b).
Request = tuple[str, int, int]
#: (measure, hash of its default parameters, whether it is symmetric).
Default = tuple[str, str, bool]


class Lookup(Protocol):
    """The caller's side of a query with ``dissim()`` calls."""

    def defaults(self) -> Sequence[Default]:
        """The measures a call may name, with their default parameters' hash and symmetry."""
        ...

    def rewrite(self, function: str) -> str:
        """The query with every ``dissim(m, a, b)`` call calling ``function`` (a qualified
        name, e.g. ``pg_temp.actdb_dissim``) instead."""
        ...

    def compute(self, missing: set[Request]) -> dict[Request, float]:
        """The values of calls that found none cached (computed, and cached when the store is
        writable). Called between the query's two runs; a DuckDB catalog is closed meanwhile,
        so the computation may write it."""
        ...
