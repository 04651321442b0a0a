"""Plain records returned by the store (frozen dataclasses, parsed from catalog rows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    id: int
    name: str
    family: str | None = None
    architecture: str | None = None
    width: int | None = None
    depth: int | None = None


@dataclass(frozen=True)
class CheckpointInfo:
    id: int
    model: str
    name: str
    step: int | None = None
    tokens_seen: int | None = None
    weights_hash: str | None = None
    duplicate_of: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    id: int
    name: str
    content_hash: str
    n_examples: int


@dataclass(frozen=True)
class TokenizationInfo:
    id: int
    dataset_id: int
    tokenizer: str
    max_length: int
    n_rows: int
    content_hash: str
    n_truncated: int


def stored_nbytes(n_rows: int, dim: int, dtype: str) -> int:
    """Bytes of an ``(n_rows, dim)`` rep as stored (float32: 4 a value; float16, bfloat16: 2)."""
    return n_rows * dim * (4 if dtype == "float32" else 2)


@dataclass(frozen=True)
class RepRecord:
    """One stored rep as the catalog describes it (names joined in), complete or not.

    The one record type of a rep: the store returns it (:meth:`~actdb.Database.write_rep`,
    :meth:`~actdb.Database.rep`, :meth:`~actdb.Database.find_reps`) and selections resolve to
    it. Built from one catalog query by column name
    (:func:`actdb.store.reps.rep_records`); ``store`` names the store it was read from
    (``"local"`` or an attachment's name)."""

    id: int
    model: str
    checkpoint: str
    step: int | None
    dataset: str
    dataset_hash: str
    site: str
    layer: int | None
    pooling: str
    n_rows: int
    dim: int
    dtype: str
    status: str
    path: str
    chunk_rows: int
    shard_rows: int
    tokenization_id: int | None = None
    tokenizer: str | None = None
    checksum: str | None = None
    created_at: datetime | None = None
    family: str | None = None
    architecture: str | None = None
    width: int | None = None
    depth: int | None = None
    n_examples: int | None = None
    max_length: int | None = None
    tokens_hash: str | None = None
    store: str = "local"

    @property
    def rep_id(self) -> int:
        """The rep's id in its store (the same as :attr:`id`)."""
        return self.id

    @property
    def key(self) -> tuple[str, int]:
        """``(store, id)``: unique across the local store and its attachments."""
        return (self.store, self.id)

    @property
    def nbytes(self) -> int:
        return stored_nbytes(self.n_rows, self.dim, self.dtype)

    def label(self) -> str:
        where = "" if self.store == "local" else f"{self.store}:"
        pooled = "" if self.pooling == "token" else f"[{self.pooling}]"
        return f"{where}{self.model}/{self.checkpoint}/{self.site}{pooled}"

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "checkpoint": self.checkpoint, "step": self.step, "site": self.site,
                "layer": self.layer, "pooling": self.pooling, "rep_id": self.id, "store": self.store}


RepInfo = RepRecord  # the name earlier releases exported; the same type


@dataclass(frozen=True)
class Problem:
    rep_id: int | None
    kind: str  # corrupt | missing | leftover | orphan
    message: str


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    problems: tuple[Problem, ...]
    repaired: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class ResultValue:
    """One computed measure value: what the executor returns, the cache stores and reads
    back, stitching produces, and every face (Python rows, SQL views, HTTP) serialises.

    ``route``: how it was computed (moments, gram, model, or cached); ``extra``: per-measure
    details (e.g. stitching's losses); ``stderr``: the jackknife standard error, when asked."""

    value: float
    n: int
    route: str
    seconds: float
    extra: dict[str, Any] | None = None
    stderr: float | None = None
