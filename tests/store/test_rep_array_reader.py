"""The row-reader seam of ``RepArray``: a fake reader injected into the handle sees only clamped,
non-empty row ranges, after the array's metadata is checked; what it returns is what the handle
serves (widened from bfloat16, gathered for ``rows``); its decoding errors become CorruptStore
naming the rep and rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actdb.errors import CorruptStore
from actdb.store import arrays as A
from actdb.store.readers import OpenedArray, RowReader


class FakeRows:
    """Serves rows from memory and records every range asked for."""

    def __init__(self, stored: np.ndarray, fail: Exception | None = None):
        self.stored, self.fail = stored, fail
        self.calls: list[tuple[int, int]] = []

    def read(self, start: int, stop: int) -> np.ndarray:
        self.calls.append((start, stop))
        if self.fail is not None:
            raise self.fail
        return self.stored[start:stop]


def rep(tmp_path: Path, n: int, dim: int, dtype: str, fake: FakeRows, opened: list[OpenedArray],
        catalog_rows: int | None = None) -> A.RepArray:
    """An (all-zero) array stored as actdb stores a rep; a handle on it reading through ``fake``
    (the catalog record may disagree on the row count)."""
    root = A.open_root(str(tmp_path), read_only=False)
    A.create_array(root, 7, n_rows=n, dim=dim, dtype=dtype, codec="lz4", chunk_rows=8, shard_rows=32)  # type: ignore[arg-type]

    def open_reader(array: OpenedArray) -> RowReader:
        opened.append(array)
        return fake

    return A.RepArray(root, A.rep_path(7), rep_id=7, n_rows=catalog_rows or n, dim=dim, dtype=dtype, chunk_rows=8,
                      shard_rows=32, reader=open_reader)


def test_the_injected_reader_serves_every_read(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    stored = A.to_storage(x, "bfloat16")
    fake, opened = FakeRows(stored), []
    h = rep(tmp_path, 50, 3, "bfloat16", fake, opened)
    assert opened == [] and fake.calls == []  # lazy: nothing opened by the constructor
    np.testing.assert_array_equal(h[10:20], A.from_storage(stored[10:20], "bfloat16"))
    assert len(opened) == 1 and opened[0].path == "reps/000000007" and opened[0].chunk_rows == 8
    assert opened[0].checksums is None  # created, never sealed
    assert h[45:99].shape == (5, 3) and h[30:30].shape == (0, 3) and h.read_stored(60, 70).dtype == np.uint16
    np.testing.assert_array_equal(h[-1], A.from_storage(stored[49], "bfloat16"))
    np.testing.assert_array_equal(h.rows(np.array([33, 2, 9])), A.from_storage(stored[[33, 2, 9]], "bfloat16"))
    assert fake.calls == [(10, 20), (45, 50), (49, 50), (0, 8), (8, 16), (32, 40)]  # clamped; no empty reads
    assert len(opened) == 1 and h.reads == 8 and h.chunks_read == 2 + 2 + 1 + 3


@pytest.mark.parametrize("error", [ValueError("bad header"), OSError("short read"), RuntimeError("blosc")])
def test_reader_errors_become_corrupt_store(tmp_path, error):
    h = rep(tmp_path, 16, 2, "float16", FakeRows(np.zeros((16, 2), np.float16), fail=error), [])
    with pytest.raises(CorruptStore, match=rf"rep 7: rows 3:9 of 'reps/000000007' cannot be decoded "
                                           rf"\({type(error).__name__}: {error}\); run `actdb verify --repair`"):
        h[3:9]


def test_the_metadata_is_checked_before_any_reader_is_built(tmp_path):
    fake, opened = FakeRows(np.zeros((16, 2), np.float16)), []
    wrong = rep(tmp_path, 16, 2, "float16", fake, opened, catalog_rows=17)
    with pytest.raises(CorruptStore, match=r"rep 7: its array's metadata does not match the catalog \(shape"):
        wrong[0:1]
    assert opened == [] and fake.calls == []
