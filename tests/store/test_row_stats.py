"""``RowStats``: the checksum is blake2b over the stored bytes in row order, however the rows
arrive (big blocks are hashed on a second thread), and the summary matches numpy's."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from actdb.store import arrays as A


@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
def test_checksum_and_summary_match_a_direct_computation(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5000, 96)) * 4).astype(np.float32)  # 1.8 MiB as float32: the threaded path
    x[17, 3], x[4000, 0] = np.inf, np.nan
    stored = A.to_storage(x, dtype)  # type: ignore[arg-type]
    stats = A.RowStats(dtype)
    for a, b in [(0, 1), (1, 3000), (3000, 3001), (3001, 5000)]:  # small and big blocks, in order
        stats.update(stored[a:b])
    assert stats.checksum == "blake2b:" + hashlib.blake2b(stored.tobytes(), digest_size=16).hexdigest()
    values = A.from_storage(stored, dtype).astype(np.float64)
    finite = values[np.isfinite(values)]
    assert stats.nonfinite == 2 and stats.count == finite.size
    summary = stats.summary()
    assert summary["stat_mean"] == pytest.approx(finite.mean(), rel=1e-12, abs=1e-12)
    assert summary["stat_std"] == pytest.approx(finite.std(), rel=1e-9)
    assert (summary["stat_min"], summary["stat_max"]) == (finite.min(), finite.max())
    assert summary["stat_absmax"] == np.abs(finite).max()


def test_a_failing_checksum_thread_is_not_silent():
    class Broken:
        def update(self, data: object) -> None:
            raise MemoryError("no memory for the checksum")

    stats = A.RowStats("float16", hasher=Broken())
    with pytest.raises(MemoryError, match="checksum"):
        stats.update(np.zeros((4096, 256), np.float16))  # 2 MiB: hashed on the second thread
