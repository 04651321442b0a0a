"""actdb: an activation database for language models."""

from actdb._version import __version__
from actdb.errors import ActdbError

__all__ = ["ActdbError", "__version__"]
