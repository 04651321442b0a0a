"""Plain records returned by the store (frozen dataclasses, parsed from catalog rows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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


@dataclass(frozen=True)
class RepInfo:
    """One complete (or in-progress) rep as the catalog describes it."""

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

    @property
    def nbytes(self) -> int:
        return self.n_rows * self.dim * (4 if self.dtype == "float32" else 2)


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
