"""Hypothesis properties of the measures: identity, invariances, symmetry, shapes, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from measures_data import activations

from actdb.query import measures as M
from actdb.query.measures import REGISTRY

PROPS = settings(max_examples=15, deadline=None)
shapes = st.tuples(st.integers(6, 60), st.integers(1, 24), st.integers(1, 24), st.integers(0, 10_000))


def pair_of(n: int, d1: int, d2: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = activations(n, d1, seed)
    y = activations(n, d2, seed + 1) + np.resize(x, (n, d2)) * 0.5
    return x, y


def orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@PROPS
@given(shapes)
def test_cka_of_a_representation_with_itself_is_one(shape) -> None:
    n, d, _, seed = shape
    x = activations(n, d, seed)
    assert M.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert M.rbf_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert M.procrustes(x, x) == pytest.approx(0.0, abs=1e-7)
    if n >= 8:
        assert M.debiased_cka(x, x) == pytest.approx(1.0, abs=1e-10)


@PROPS
@given(shapes, st.floats(0.01, 100.0))
def test_cka_and_procrustes_invariant_to_orthogonal_maps_and_isotropic_scaling(shape, scale) -> None:
    n, d1, d2, seed = shape
    x, y = pair_of(n, d1, d2, seed)
    xt = scale * x @ orthogonal(d1, seed) + 7.0
    for f, tol in ((M.linear_cka, 1e-9), (M.procrustes, 1e-7)):
        assert f(xt, y) == pytest.approx(f(x, y), abs=tol)


@PROPS
@given(st.integers(20, 60), st.integers(3, 16), st.integers(0, 10_000))
def test_cka_and_procrustes_not_invariant_to_general_invertible_maps(n, d, seed) -> None:
    x, y = pair_of(n, d, d, seed)
    a = np.diag(np.geomspace(1.0, 1e3, d)) @ orthogonal(d, seed + 1)  # anisotropic, invertible
    xa = (x - x.mean(0)) / x.std(0) @ a
    xs = (x - x.mean(0)) / x.std(0)
    assert abs(M.linear_cka(xa, y) - M.linear_cka(xs, y)) > 1e-6
    assert abs(M.procrustes(xa, y) - M.procrustes(xs, y)) > 1e-6
    # ...while CCA is invariant to every invertible linear map
    assert M.mean_cca(xa, y) == pytest.approx(M.mean_cca(xs, y), abs=1e-7)


@PROPS
@given(st.integers(30, 80), st.integers(2, 10), st.integers(2, 10), st.integers(0, 10_000))
def test_cca_invariant_to_invertible_maps(n, d1, d2, seed) -> None:
    x, y = pair_of(n, d1, d2, seed)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d1, d1)) + 3 * np.eye(d1)
    b = rng.standard_normal((d2, d2)) + 3 * np.eye(d2)
    assert M.mean_cca(x @ a + 1.0, y @ b) == pytest.approx(M.mean_cca(x, y), abs=1e-7)
    # R² of Y from X depends on X only through its column space
    assert M.linear_regression(x @ a + 1.0, y) == pytest.approx(M.linear_regression(x, y), abs=1e-7)


SYMMETRIC = sorted(n for n, s in REGISTRY.items() if s.symmetric and s.route != "model")


@PROPS
@given(shapes)
def test_symmetric_measures_are_symmetric(shape) -> None:
    n, d1, d2, seed = shape
    x, y = pair_of(max(n, 12), max(d1, 2), max(d2, 2), seed)
    for name in SYMMETRIC:
        f = REGISTRY[name].func
        assert f(x, y) == pytest.approx(f(y, x), abs=1e-9), name


@PROPS
@given(st.integers(5, 30), st.integers(31, 70), st.integers(0, 10_000))
def test_fewer_rows_than_columns_gives_values_in_range(n, d, seed) -> None:
    x, y = pair_of(n, d, d // 2 + 1, seed)
    for name, spec in REGISTRY.items():
        if spec.route == "model" or (name == "debiased_cka" and n < 6):
            continue
        kwargs = {"k": min(3, n - 1)} if name == "knn_overlap" else {}
        v = spec.func(x, y, **kwargs)
        lo, hi = spec.value_range
        assert lo - 1e-12 <= v <= hi + 1e-12, name
    # with n - 1 <= d every direction is correlated perfectly: CCA degenerates to 1
    assert M.mean_cca(x, y) == pytest.approx(1.0, abs=1e-6)


@PROPS
@given(shapes)
def test_float16_input_equals_float64_of_the_rounded_values(shape) -> None:
    n, d1, d2, seed = shape
    x, y = pair_of(n, max(d1, 2), max(d2, 2), seed)
    x16, y16 = x.astype(np.float16), y.astype(np.float16)
    # rounding to float16 can make a row constant, which correlation RDMs reject (tested elsewhere)
    flat_row = bool((np.ptp(x16, axis=1) == 0).any() or (np.ptp(y16, axis=1) == 0).any())
    for f in (M.linear_cka, M.procrustes) if flat_row else (M.linear_cka, M.procrustes, M.rsa):
        assert f(x16, y16) == pytest.approx(f(x16.astype(np.float64), y16.astype(np.float64)), abs=1e-12)
