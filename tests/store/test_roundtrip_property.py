"""Property: any array written is read back equal within the stored dtype's precision,
for random shapes and chunk boundaries."""

from __future__ import annotations

import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actdb
from actdb.store import arrays


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 300), d=st.integers(1, 40), chunk_bytes=st.sampled_from([2, 64, 1000, 1 << 20]),
       dtype=st.sampled_from(["float16", "float32", "bfloat16"]), seed=st.integers(0, 2**32 - 1),
       slices=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), max_size=4))
def test_round_trip(monkeypatch, n, d, chunk_bytes, dtype, seed, slices):
    monkeypatch.setattr(arrays, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) * rng.uniform(0.01, 100)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        db = actdb.open(tmp + "/s")
        db.add_dataset("d", [str(i) for i in range(n)])
        info = db.write_rep("m", "c", "d", "hidden.1", x, pooling="mean", dtype=dtype)
        handle = db.read_rep(info.id)
        expect = arrays.from_storage(arrays.to_storage(x, dtype), dtype)
        rtol = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 0}[dtype]
        np.testing.assert_allclose(expect.astype(np.float32), x, rtol=rtol, atol=rtol * 1e-4 if rtol else 0)
        back = handle.to_numpy()
        assert back.shape == (n, d)
        np.testing.assert_array_equal(back, expect)
        for a, b in slices:
            np.testing.assert_array_equal(handle[a:b], expect[a:b])
        blocks = [blk for _, blk in handle.iter_blocks(block_rows=max(1, n // 3))]
        np.testing.assert_array_equal(np.concatenate(blocks), expect)
        assert db.verify().clean
        db.close()
