"""actdb.store: all persistent state (Zarr v3 arrays + the SQL catalog).

Nothing outside this package opens a Zarr array or a catalog connection.
"""

from actdb.store.arrays import CODECS, DEFAULT_CODEC, RepArray
from actdb.store.records import (
    CheckpointInfo, DatasetInfo, ModelInfo, Problem, RepInfo, TokenizationInfo, VerifyReport,
)
from actdb.store.reps import RepWriter
from actdb.store.store import Store

__all__ = [
    "CODECS", "DEFAULT_CODEC", "CheckpointInfo", "DatasetInfo", "ModelInfo", "Problem", "RepArray", "RepInfo",
    "RepWriter", "Store", "TokenizationInfo", "VerifyReport",
]
