"""Helpers of the hostile-input suite: a small populated store, a snapshot of everything
it holds (so each test can assert that a refused request wrote NOTHING), raises_actdb."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actdb

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
from reliability_kit import catalog_dump, file_tree, tiny_bert

__all__ = ["catalog_dump", "file_tree", "tiny_bert"]

N_EX, DIM = 12, 6


def populate(db: actdb.Database) -> None:
    """One dataset (12 texts, labels), a token table, two checkpoints x two sites."""
    texts = [f"text {i} about thing {i % 3}" for i in range(N_EX)]
    db.add_dataset("d", texts, labels=["a" if i % 2 else "b" for i in range(N_EX)])
    ex = np.repeat(np.arange(N_EX), 3)
    tokens = {"example": ex, "position": np.tile(np.arange(3), N_EX), "token_id": ex % 7,
              "char_start": np.tile(np.arange(3), N_EX), "char_end": np.tile(np.arange(3), N_EX) + 1}
    rng = np.random.default_rng(0)
    with db.session():
        for ck, step in (("step1", 1), ("final", 9)):
            db.add_checkpoint("m", ck, step=step)
            for layer in (1, 2):
                db.write_rep("m", ck, "d", f"hidden.{layer}", rng.standard_normal((N_EX * 3, DIM)),
                             tokens=tokens, tokenizer="tok", dtype="float32")
                db.write_rep("m", ck, "d", f"hidden.{layer}", rng.standard_normal((N_EX, DIM)), pooling="mean")


class Snapshot:
    def __init__(self, db: actdb.Database, outside: Path):
        self.db, self.outside = db, outside
        self.catalog = catalog_dump(db.catalog_url)
        self.files = file_tree(db.path)
        self.outside_files = file_tree(outside)

    def assert_unchanged(self) -> None:
        after = catalog_dump(self.db.catalog_url)
        changed = {t for t in set(after) | set(self.catalog) if after.get(t) != self.catalog.get(t)}
        assert not changed, f"catalog tables changed: {sorted(changed)}"
        assert file_tree(self.db.path) == self.files, "store files changed"
        assert file_tree(self.outside) == self.outside_files, "files appeared or changed outside the store"


def raises_actdb(fn: Callable[[], Any], kind: type[actdb.ActdbError] = actdb.ActdbError,
                 match: str | None = None) -> actdb.ActdbError:
    """Call ``fn``; it must raise ``kind`` (an actdb error), and nothing else."""
    import re

    try:
        fn()
    except actdb.ActdbError as exc:
        assert isinstance(exc, kind), f"{type(exc).__name__} is not {kind.__name__}: {exc}"
        if match is not None:
            assert re.search(match, str(exc)), f"{str(exc)!r} does not match {match!r}"
        return exc
    except Exception as exc:  # the point: only actdb errors may escape
        pytest.fail(f"raised {type(exc).__name__} (not an actdb error): {exc}")
    pytest.fail("accepted a hostile input")
