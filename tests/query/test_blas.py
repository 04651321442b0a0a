"""The ctypes SYRK on numpy's own OpenBLAS, and the fused (block-by-block) update path that
uses it, against numpy products and the unfused path."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from measures_data import activations

from actdb.errors import NonFinite
from actdb.query.moments import Moments, blas, kernel

WHEEL_OPENBLAS = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas64*"))


def test_numpys_openblas_syrk_is_found_where_the_wheel_ships_it() -> None:
    if not WHEEL_OPENBLAS:
        pytest.skip("this numpy build has no bundled OpenBLAS (the fused path is then off)")
    assert blas.syrk_available()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (1025, 33)])
def test_syrk_accumulate_adds_the_upper_triangle_and_leaves_the_lower(dtype: type, shape: tuple[int, int]) -> None:
    if not blas.syrk_available():
        pytest.skip("no SYRK binding here")
    rng = np.random.default_rng(shape[0])
    a, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    acc = rng.standard_normal((shape[1], shape[1])).astype(dtype)
    start = acc.copy()
    blas.syrk_accumulate(a, acc)
    blas.syrk_accumulate(b, acc)
    want = start.astype(np.float64) + a.T.astype(np.float64) @ a + b.T.astype(np.float64) @ b
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.triu(acc), np.triu(want), rtol=tol, atol=tol * np.abs(want).max())
    assert np.array_equal(np.tril(acc, -1), np.tril(start, -1))


def test_syrk_accumulate_refuses_arrays_it_cannot_pass_to_blas() -> None:
    if not blas.syrk_available():
        pytest.skip("no SYRK binding here")
    a = np.ones((5, 3), dtype=np.float32)
    for bad_a, bad_acc in ((a, np.zeros((3, 3))),                         # mixed dtypes
                           (a[:, :2], np.zeros((2, 2), np.float32)),      # not contiguous
                           (a, np.zeros((3, 3), np.float32).T[:, :]),     # fine (contiguous view)…
                           (a, np.zeros((4, 4), np.float32))):            # wrong size
        if bad_acc.shape == (3, 3) and bad_acc.dtype == np.float32:
            continue
        with pytest.raises(ValueError, match="C-contiguous"):
            blas.syrk_accumulate(bad_a, bad_acc)


@pytest.mark.parametrize("d", [1, 255, 256, 600])
def test_mirror_upper_copies_the_upper_triangle_down(d: int) -> None:
    a = np.random.default_rng(d).standard_normal((d, d)).astype(np.float32)
    want = np.triu(a) + np.triu(a, 1).T
    kernel.mirror_upper(a)
    assert np.array_equal(a, want)


@pytest.mark.parametrize("precision", ["float64", "mixed"])
def test_fused_update_equals_the_unfused_one(monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    """Row counts that are not multiples of ROW_BLOCK, several sub-chunks (small budget),
    a pairs mask, row norms and heavy columns: both paths give the same statistics."""
    if not blas.syrk_available():
        pytest.skip("no SYRK binding here")
    reps = [activations(2600, d, s) for d, s in ((150, 1), (120, 2), (40, 3))]
    budget = 4 * (2 * 4 * 310 * 1500)  # sub-chunks of ~1,500 rows; one panel holds all reps

    def build() -> Moments:
        m = Moments.empty([150, 120, 40], precision=precision, budget_bytes=budget, pairs=[(0, 1), (1, 2)])
        for a in range(0, 2600, 1300):
            m.update([r[a:a + 1300] for r in reps])
        return m

    assert len(kernel.panels(Moments.empty([150, 120, 40]).offsets, budget, np.dtype(np.float32))) == 1
    fused = build()
    monkeypatch.setattr(kernel, "syrk_available", lambda: False)
    plain = build()
    assert fused.blocks.keys() == plain.blocks.keys() and fused.n == plain.n == 2600
    for k in fused.blocks:
        np.testing.assert_allclose(fused.blocks[k], plain.blocks[k], rtol=0,
                                   atol=1e-6 * np.abs(plain.blocks[k]).max())
        if k[0] == k[1]:
            assert np.array_equal(fused.blocks[k], fused.blocks[k].T)
    for name in ("sum_u", "w", "v", "q"):  # float32 sums of products (mixed): to their scale
        want = getattr(plain, name)
        np.testing.assert_allclose(getattr(fused, name), want, rtol=0, atol=1e-6 * np.abs(want).max())
    for i, j in ((0, 1), (1, 2)):
        x, y = reps[i].astype(np.float64), reps[j].astype(np.float64)
        xc, yc = x - x.mean(0), y - y.mean(0)
        cka = np.linalg.norm(xc.T @ yc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
        pm = fused.pair(i, j)
        got = np.linalg.norm(pm.sxy) ** 2 / (np.linalg.norm(pm.sxx) * np.linalg.norm(pm.syy))
        assert got == pytest.approx(cka, abs=1e-8)


def test_a_non_finite_chunk_leaves_the_accumulator_as_it_was() -> None:
    x = activations(3000, 40, 1)
    m = Moments.empty([40, 40]).update([x[:1000], x[:1000, ::-1]])
    before = m.to_arrays()
    bad = x[1000:].copy()
    bad[2500 - 1000, 3] = np.inf
    with pytest.raises(NonFinite, match="row 2500"):
        m.update([bad, bad[:, ::-1]])
    after = m.to_arrays()
    assert before.keys() == after.keys()
    for k in before:
        assert np.array_equal(before[k], after[k], equal_nan=before[k].dtype.kind == "f"), k
