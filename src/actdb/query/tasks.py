"""The units of a plan: a pair's row space and one (pair, measure) task with its cache key.

Plain immutable data shared by the planner (:mod:`actdb.query.plan`), the executor and the
caches; it imports no part of the engine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from actdb.errors import InvalidInput
from actdb.query.measures import get_measure
from actdb.store.records import RepRecord

PAIR_MODES = ("all", "same_layer", "zip", "consecutive", "to_reference")
ALIGNS = ("example:mean", "example:first", "example:last", "word")


def params_hash(params: dict[str, Any]) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class RowSpace:
    """The rows two reps are compared on: same dataset, same unit, same subset."""

    dataset_hash: str
    unit: str  # "tokens:<hash>" | "examples" | "example:<pool>" | "word"
    subset: str | None
    align: str | None

    @property
    def hash(self) -> str:
        if self.subset is None and self.align is None:
            return "all"
        text = f"subset={self.subset}|align={self.align}"
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:24]


def row_space(a: RepRecord, b: RepRecord, subset: str | None, align: str | None) -> RowSpace:
    """The shared row space of a pair, or a clear error saying why there is none."""
    if a.dataset_hash != b.dataset_hash:
        raise InvalidInput(
            f"{a.label()} and {b.label()} are over different texts: dataset {a.dataset!r} has content "
            f"hash {a.dataset_hash[:19]}..., dataset {b.dataset!r} has {b.dataset_hash[:19]}...; "
            "compare reps of the same texts (same dataset contents)")
    if align is not None:
        return RowSpace(a.dataset_hash, align, subset, align)
    if a.pooling != b.pooling and "token" in (a.pooling, b.pooling):
        raise InvalidInput(
            f"{a.label()} is {a.pooling}-level and {b.label()} is {b.pooling}-level; pass "
            "align='example:mean' (or first/last) to pool the token-level side to examples")
    if a.pooling == "token":
        if a.tokens_hash != b.tokens_hash:
            raise InvalidInput(
                f"{a.label()} (tokenizer {a.tokenizer!r}) and {b.label()} (tokenizer {b.tokenizer!r}) have "
                "different token tables, so their rows are different tokens. Options: align='example:mean' "
                "(or 'example:first'/'example:last') pools both to one row per text; align='word' maps "
                "tokens to whitespace-separated words through their character spans")
        return RowSpace(a.dataset_hash, f"tokens:{a.tokens_hash}", subset, None)
    return RowSpace(a.dataset_hash, "examples", subset, None)


@dataclass(frozen=True)
class Task:
    """One (pair, measure) to evaluate, with its cache key."""

    a: RepRecord
    b: RepRecord
    measure: str
    params: tuple[tuple[str, Any], ...]
    space: RowSpace

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def cache_key(self) -> tuple[str, str, tuple[str, int], tuple[str, int], str]:
        """(measure, params hash, (store, rep a), (store, rep b), row-space hash); a
        symmetric measure's pair is ordered so (a, b) and (b, a) share one entry."""
        a, b = self.a.key, self.b.key
        if get_measure(self.measure).symmetric and a > b:
            a, b = b, a
        return (self.measure, params_hash(self.params_dict), a, b, self.space.hash)
