"""Fitting the stitch: the closed-form ridge affine map from streamed moments."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from actdb.query.stitching.fit import AffineMap, fit_affine, fit_reps


def _blocks(X: np.ndarray, Y: np.ndarray, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    cuts = np.cumsum([0, *sizes])
    return [(X[a:b], Y[a:b]) for a, b in itertools.pairwise(cuts)]


def test_a_rep_fitted_to_itself_is_the_identity() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) * [1, 2, 3, 4, 5, 6] + 7.0  # off-centre, unequal scales
    m = fit_affine(_blocks(X, X, [100, 0, 150, 50]), 6, 6, ridge=0.0)
    np.testing.assert_allclose(m.weight, np.eye(6), atol=1e-9)
    np.testing.assert_allclose(m.bias, np.zeros(6), atol=1e-8)
    assert m.ridge_absolute == 0.0


def test_recovers_a_known_affine_map_from_streamed_blocks() -> None:
    rng = np.random.default_rng(1)
    A, c = rng.standard_normal((5, 3)), rng.standard_normal(3)
    X = rng.standard_normal((400, 5)) + 2.0
    Y = X @ A + c
    m = fit_affine(_blocks(X, Y, [7, 93, 0, 300]), 5, 3, ridge=0.0)
    np.testing.assert_allclose(m.weight, A, atol=1e-9)
    np.testing.assert_allclose(m.bias, c, atol=1e-9)
    np.testing.assert_allclose(X @ m.weight + m.bias, Y, atol=1e-8)


def test_noisy_fit_is_ordinary_least_squares_with_an_intercept() -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 4))
    Y = X @ rng.standard_normal((4, 2)) + rng.standard_normal((200, 2))  # not exactly linear
    m = fit_affine([(X, Y)], 4, 2, ridge=0.0)
    coef, *_ = np.linalg.lstsq(np.hstack([X, np.ones((200, 1))]), Y, rcond=None)
    np.testing.assert_allclose(m.weight, coef[:4], atol=1e-10)
    np.testing.assert_allclose(m.bias, coef[4], atol=1e-10)


def test_ridge_is_relative_to_the_mean_eigenvalue_of_a() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((150, 4)) * 3.0
    Y = X @ rng.standard_normal((4, 2)) + 0.1 * rng.standard_normal((150, 2))
    ridge = 0.5
    m = fit_affine([(X, Y)], 4, 2, ridge=ridge)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    lam = ridge * np.trace(Xc.T @ Xc) / 4
    assert m.ridge_absolute == pytest.approx(lam, rel=1e-10)
    expected = np.linalg.solve(Xc.T @ Xc + lam * np.eye(4), Xc.T @ Yc)
    np.testing.assert_allclose(m.weight, expected, rtol=1e-9)
    np.testing.assert_allclose(m.bias, Y.mean(0) - X.mean(0) @ expected, atol=1e-10)
    # relative: scaling A's activations by 10 scales the map by 1/10, the shrinkage unchanged
    scaled = fit_affine([(10 * X, Y)], 4, 2, ridge=ridge)
    np.testing.assert_allclose(scaled.weight, m.weight / 10, rtol=1e-9)
    assert scaled.ridge_absolute == pytest.approx(100 * lam, rel=1e-10)
    # and it shrinks: the ridge map is smaller than the least-squares one
    assert np.linalg.norm(m.weight) < np.linalg.norm(fit_affine([(X, Y)], 4, 2, ridge=0.0).weight)


class _Rows:
    """A stored rep's rows as :func:`fit_reps` reads them (slices of an in-memory array)."""

    def __init__(self, values: np.ndarray, chunk_rows: int) -> None:
        self.values, self.chunk_rows = values.astype(np.float32), chunk_rows
        self.shape = self.values.shape
        self.value_dtype = np.dtype(np.float32)

    def __getitem__(self, key: slice) -> np.ndarray:
        return self.values[key]


def test_fit_reps_reads_only_the_fit_rows() -> None:
    rng = np.random.default_rng(4)
    A, c = rng.standard_normal((3, 3)), np.array([1.0, -2.0, 0.5])
    X = rng.standard_normal((90, 3))
    Y = rng.standard_normal((90, 3)) * 50  # unrelated to X ...
    rows = np.flatnonzero(np.arange(90) % 3 != 0)
    Y[rows] = X[rows] @ A + c  # ... except on the fit rows
    m = fit_reps(_Rows(X, 8), _Rows(Y, 8), rows, ridge=0.0)  # type: ignore[arg-type]
    np.testing.assert_allclose(m.weight, A, atol=1e-4)  # float32 storage
    np.testing.assert_allclose(m.bias, c, atol=1e-4)


def test_map_tensors_are_float32_and_trainable_only_when_asked() -> None:
    m = AffineMap(np.eye(2), np.array([1.0, 2.0]))
    w, b = m.tensors()
    assert str(w.dtype) == "torch.float32" and not w.requires_grad and b.tolist() == [1.0, 2.0]
    w, b = m.tensors(trainable=True)
    assert w.requires_grad and b.requires_grad
