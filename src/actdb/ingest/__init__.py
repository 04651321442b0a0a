"""actdb.ingest: run transformers models (and checkpoint sweeps) over texts into the store.

``run(db, model, dataset, ...)`` (also ``Database.ingest``). Importing this package
does not import torch; running does.
"""

from actdb.ingest.checkpoints import CheckpointSpec, parse_checkpoints
from actdb.ingest.result import CheckpointResult, IngestResult
from actdb.ingest.runner import run
from actdb.ingest.texts import Texts, docstring_texts, load_texts

__all__ = ["CheckpointResult", "CheckpointSpec", "IngestResult", "Texts", "docstring_texts", "load_texts",
           "parse_checkpoints", "run"]
