"""Streaming statistics of a rep as it is written: its whole-rep checksum (blake2b over the
stored bytes) and the summary columns of its catalog row (mean, std, min, max, absmax)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actdb.store.codecs import from_storage
from actdb.store.threads import in_background

_HASH_THREAD_BYTES = 1 << 20  # blocks from 1 MiB are hashed on a second thread
_STATS_BLOCK_VALUES = 1 << 17  # values widened to float64 at a time (1 MiB)


@dataclass
class RowStats:
    """Streaming checksum and summary statistics over rows in stored form."""

    dtype: str
    hasher: Any = field(default_factory=lambda: hashlib.blake2b(digest_size=16))
    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    vmin: float = float("inf")
    vmax: float = float("-inf")
    nonfinite: int = 0

    def update(self, stored: np.ndarray) -> None:
        """Add rows ``(k, dim)`` in stored form. A big block is hashed on a second thread
        (blake2b releases the GIL) while the statistics run here, in float64, a block of
        rows at a time so the widened copy stays in cache (faster than hashing a copy, then
        widening the whole block: docs/reliability.md). The checksum is the same either way."""
        data = np.ascontiguousarray(stored)
        raw = data.reshape(-1).data.cast("B")
        hashing = in_background(self.hasher.update, raw) if raw.nbytes >= _HASH_THREAD_BYTES else None
        if hashing is None:
            self.hasher.update(raw)
        try:
            step = max(1, _STATS_BLOCK_VALUES // max(1, data.shape[-1] if data.ndim > 1 else 1))
            for start in range(0, len(data), step):
                self._add(from_storage(data[start: start + step], self.dtype).astype(np.float64).ravel())
        finally:
            if hashing is not None:
                hashing.result()

    def _add(self, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        if not finite.all():
            self.nonfinite += int((~finite).sum())
            values = values[finite]
        if values.size:
            self.count += values.size
            self.total += float(values.sum())
            self.total_sq += float(np.dot(values, values))
            self.vmin = min(self.vmin, float(values.min()))
            self.vmax = max(self.vmax, float(values.max()))

    @property
    def checksum(self) -> str:
        digest: str = self.hasher.hexdigest()
        return "blake2b:" + digest

    def summary(self) -> dict[str, float | None]:
        if self.count == 0:
            return {"stat_mean": None, "stat_std": None, "stat_min": None, "stat_max": None, "stat_absmax": None}
        mean = self.total / self.count
        var = max(self.total_sq / self.count - mean * mean, 0.0)
        return {
            "stat_mean": mean, "stat_std": var ** 0.5, "stat_min": self.vmin, "stat_max": self.vmax,
            "stat_absmax": max(abs(self.vmin), abs(self.vmax)),
        }
