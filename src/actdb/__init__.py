"""actdb: an activation database for language models."""

from actdb._version import __version__
from actdb.database import Database, open
from actdb.errors import ActdbError

__all__ = ["ActdbError", "Database", "__version__", "open"]
