"""actdb.store: all persistent state (Zarr v3 arrays + the SQL catalog).

A :class:`Store` composes a catalog, an array root and one repository per group of tables
(the only code that reads and writes them); a :class:`StoreSet` is the local store plus
the stores attached to it. Nothing outside this package opens a Zarr array for writing or
a catalog connection, and this package imports nothing of actdb but its errors.
"""

from actdb.store.arrays import CODECS, DEFAULT_CODEC, RepArray
from actdb.store.records import (
    CheckpointInfo,
    DatasetInfo,
    ModelInfo,
    Problem,
    RepInfo,
    RepRecord,
    ResultValue,
    TokenizationInfo,
    VerifyReport,
)
from actdb.store.rep_writer import RepWriter
from actdb.store.store import Store
from actdb.store.storeset import StoreSet

__all__ = [
    "CODECS", "DEFAULT_CODEC", "CheckpointInfo", "DatasetInfo", "ModelInfo", "Problem", "RepArray", "RepInfo",
    "RepRecord", "RepWriter", "ResultValue", "Store", "StoreSet", "TokenizationInfo", "VerifyReport",
]
