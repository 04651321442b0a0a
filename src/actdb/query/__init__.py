"""actdb.query: lazy selections and comparison plans, measures, the results cache, SQL.

``db.reps(...)`` -> :class:`Selection`; ``Selection.compare(...)`` -> :class:`Comparison`;
``Comparison.compute()`` -> :class:`ResultSet`. Measures live in
:mod:`actdb.query.measures`.
"""

from actdb.query.executor import ResultSet
from actdb.query.filters import parse_filter_string
from actdb.query.plan import Comparison
from actdb.query.selection import Selection
from actdb.store.records import RepRecord

Rep = RepRecord  # the name earlier releases exported for a selected rep; the same type

__all__ = ["Comparison", "Rep", "RepRecord", "ResultSet", "Selection", "parse_filter_string"]
