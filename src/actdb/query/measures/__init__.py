"""Representation (dis)similarity measures: plain functions over two row-aligned matrices.

Each measure is ``name(X, Y, **params) -> float`` with ``X`` ``(n, d1)`` and ``Y`` ``(n, d2)``
(numpy arrays or torch tensors, any float dtype; all arithmetic in float64), plus
:data:`REGISTRY` mapping the name to its :class:`MeasureSpec` (kind, range, route, parameter
defaults, citation). Moments-route measures are computed from a streaming
:class:`~actdb.query.moments.Moments` accumulator; ``stderr=True`` also returns a jackknife
standard error over contiguous row shards. Gram-route measures work on a seeded row sample
(``sample`` rows, default 4,096, exact when ``n`` is smaller).

>>> import numpy as np
>>> X = np.random.default_rng(0).standard_normal((100, 8))
>>> round(linear_cka(X, 2 * X), 12)
1.0
>>> get_measure("procrustes").kind
'distance'
"""

from __future__ import annotations

from typing import Any, Literal

from actdb.query.measures import _gram_route as _g
from actdb.query.measures import _moment_route as _m
from actdb.query.measures._api import (
    DEFAULT_SHARDS,
    MeasureResult,
    _call,
    choose_route,
    evaluate,
    jackknife_stderr,
)
from actdb.query.measures._gram_route import DEFAULT_SAMPLE, RowSample, cka_from_grams, hsic, rdm, sample_rows
from actdb.query.measures._spec import REGISTRY, MeasureSpec, get_measure, register
from actdb.query.moments import Moments, PairMoments, Precision

__all__ = [
    "REGISTRY", "MeasureResult", "MeasureSpec", "Moments", "PairMoments", "RowSample",
    "choose_route", "cka_from_grams", "debiased_cka", "evaluate", "get_measure", "gulp", "hsic",
    "jackknife_stderr", "knn_overlap", "linear_cka", "linear_regression", "mean_cca",
    "procrustes", "pwcca", "rbf_cka", "rdm", "register", "rsa", "sample_rows", "svcca",
]

Route = Literal["auto", "moments", "gram"]


def linear_cka(
    X: Any, Y: Any, *, stderr: bool = False, shards: int = DEFAULT_SHARDS, route: Route = "moments",
    sample: int | None = DEFAULT_SAMPLE, seed: int = 0, precision: Precision = "float64",
) -> Any:
    """Linear CKA (Kornblith et al. 2019): ``‖X̃ᵀỸ‖²_F / (‖X̃ᵀX̃‖_F ‖ỸᵀỸ‖_F)`` ∈ [0, 1] on the
    column-centred ``X̃`` ``(n, d1)``, ``Ỹ`` ``(n, d2)``. Invariant to orthogonal maps and
    isotropic scaling. ``route="gram"`` computes it from ``(m, m)`` Grams of a row sample."""
    return _call("linear_cka", X, Y, stderr, shards=shards, route=route, sample=sample, seed=seed,
                 precision=precision)


def debiased_cka(
    X: Any, Y: Any, *, stderr: bool = False, shards: int = DEFAULT_SHARDS, route: Route = "moments",
    sample: int | None = DEFAULT_SAMPLE, seed: int = 0, precision: Precision = "float64",
) -> Any:
    """Debiased linear CKA: CKA with the unbiased HSIC estimator (Song et al. 2012; Nguyen et
    al. 2021) of linear kernels on centred features, from moments plus per-row-norm sums
    (``Σ‖x̃_i‖²‖ỹ_i‖²``). Needs n ≥ 4; in [-1, 1]."""
    return _call("debiased_cka", X, Y, stderr, shards=shards, route=route, sample=sample, seed=seed,
                 precision=precision)


def rbf_cka(
    X: Any, Y: Any, *, sigma: float = 0.8, median: str = "offdiag", debiased: bool = False,
    sample: int | None = DEFAULT_SAMPLE, seed: int = 0,
) -> float:
    """RBF-kernel CKA (Kornblith et al. 2019): ``K_ij = exp(−‖x_i−x_j‖²/(2σ²·med))`` with ``σ``
    a fraction (default 0.8) of the median pairwise distance ``med`` (``median="offdiag"``:
    over distinct pairs, default; ``"all"``: all m² entries incl. the zero diagonal, as
    Kornblith et al.'s reference code)."""
    return _call("rbf_cka", X, Y, False, sigma=sigma, median=median, debiased=debiased,
                 sample=sample, seed=seed)


def mean_cca(X: Any, Y: Any, *, stderr: bool = False, shards: int = DEFAULT_SHARDS,
             precision: Precision = "float64") -> Any:
    """Mean canonical correlation over ``min(rank X, rank Y)`` directions (Hotelling 1936)."""
    return _call("mean_cca", X, Y, stderr, shards=shards, precision=precision)


def svcca(X: Any, Y: Any, *, keep: float = 0.99, stderr: bool = False, shards: int = DEFAULT_SHARDS,
          precision: Precision = "float64") -> Any:
    """SVCCA (Raghu et al. 2017): mean canonical correlation after keeping each side's top
    principal directions explaining ``keep`` (default 99%) of its variance."""
    return _call("svcca", X, Y, stderr, keep=keep, shards=shards, precision=precision)


def pwcca(X: Any, Y: Any, *, weights: str = "x", stderr: bool = False, shards: int = DEFAULT_SHARDS,
          precision: Precision = "float64") -> Any:
    """PWCCA (Morcos et al. 2018): canonical correlations weighted by how much of X's centred
    neurons each canonical variate accounts for (``weights="x"``; or ``"y"``, ``"smaller"``,
    ``"mean"`` = average of both directions, symmetric, as repsim)."""
    return _call("pwcca", X, Y, stderr, weights=weights, shards=shards, precision=precision)


def procrustes(X: Any, Y: Any, *, squared: bool = True, stderr: bool = False,
               shards: int = DEFAULT_SHARDS, precision: Precision = "float64") -> Any:
    """Orthogonal Procrustes distance (Ding et al. 2021): ``2 − 2‖X̂ᵀŶ‖_*`` on centred,
    unit-Frobenius-norm X̂, Ŷ, in [0, 2]; ``squared=False`` returns its square root."""
    return _call("procrustes", X, Y, stderr, squared=squared, shards=shards, precision=precision)


def linear_regression(X: Any, Y: Any, *, ridge: float = 0.0, stderr: bool = False,
                      shards: int = DEFAULT_SHARDS, precision: Precision = "float64") -> Any:
    """In-sample R² of the (ridge, ``ridge`` = λ on summed squares) least-squares prediction of
    Y from X with intercept. Not symmetric."""
    return _call("linear_regression", X, Y, stderr, ridge=ridge, shards=shards, precision=precision)


def gulp(X: Any, Y: Any, *, lam: float = 1e-2, squared: bool = False, stderr: bool = False,
         shards: int = DEFAULT_SHARDS, precision: Precision = "float64") -> Any:
    """GULP distance (Boix-Adserà et al. 2022) with ridge ``lam`` on the covariances (/n)."""
    return _call("gulp", X, Y, stderr, lam=lam, squared=squared, shards=shards, precision=precision)


def rsa(X: Any, Y: Any, *, rdm_method: str = "correlation", compare: str = "spearman",
        sample: int | None = DEFAULT_SAMPLE, seed: int = 0) -> float:
    """RSA (Kriegeskorte et al. 2008): Spearman (or Pearson) correlation between the upper
    triangles of the rows' RDMs (``1 − Pearson`` between rows by default)."""
    return _call("rsa", X, Y, False, rdm_method=rdm_method, compare=compare, sample=sample, seed=seed)


def knn_overlap(X: Any, Y: Any, *, k: int = 10, sample: int | None = DEFAULT_SAMPLE, seed: int = 0) -> float:
    """Mutual k-nearest-neighbour overlap (Huh et al. 2024), cosine neighbours, self excluded."""
    return _call("knn_overlap", X, Y, False, k=k, sample=sample, seed=seed)


_SAMPLING = {"sample": DEFAULT_SAMPLE, "seed": 0}
_SPECS = [
    MeasureSpec("linear_cka", linear_cka, "similarity", (0.0, 1.0), "moments", {},
                "Kornblith et al. 2019, Similarity of Neural Network Representations Revisited (ICML)",
                _m.linear_cka_from_moments, True,
                description="Linear centred kernel alignment"),
    MeasureSpec("debiased_cka", debiased_cka, "similarity", (-1.0, 1.0), "moments", {},
                "Song et al. 2012 (unbiased HSIC, JMLR); Nguyen et al. 2021 (ICLR)",
                _m.debiased_cka_from_moments, True,
                description="Linear CKA with the unbiased HSIC estimator", row_norms=True),
    MeasureSpec("rbf_cka", rbf_cka, "similarity", (0.0, 1.0), "gram",
                {"sigma": 0.8, "median": "offdiag", "debiased": False, **_SAMPLING},
                "Kornblith et al. 2019 (ICML)", None, True, _g.rbf_cka_rows,
                description="CKA with RBF kernels, bandwidth a fraction of the median distance"),
    MeasureSpec("mean_cca", mean_cca, "similarity", (0.0, 1.0), "moments", {},
                "Hotelling 1936, Relations between two sets of variates (Biometrika)",
                _m.mean_cca_from_moments, True, description="Mean canonical correlation"),
    MeasureSpec("svcca", svcca, "similarity", (0.0, 1.0), "moments", {"keep": 0.99},
                "Raghu et al. 2017, SVCCA (NeurIPS)", _m.svcca_from_moments, True,
                description="Mean CCA after SVD truncation to 99% variance"),
    MeasureSpec("pwcca", pwcca, "similarity", (0.0, 1.0), "moments", {"weights": "x"},
                "Morcos et al. 2018, Insights on representational similarity (NeurIPS)",
                _m.pwcca_from_moments, False, description="Projection-weighted CCA"),
    MeasureSpec("procrustes", procrustes, "distance", (0.0, 2.0), "moments", {"squared": True},
                "Ding et al. 2021, Grounding Representation Similarity (NeurIPS)",
                _m.procrustes_from_moments, True, description="Orthogonal Procrustes distance"),
    MeasureSpec("linear_regression", linear_regression, "similarity", (0.0, 1.0), "moments",
                {"ridge": 0.0}, "Kornblith et al. 2019 §2 (linear regression fit, R²)",
                _m.linear_regression_from_moments, False, description="R² predicting Y from X"),
    MeasureSpec("gulp", gulp, "distance", (0.0, float("inf")), "moments",
                {"lam": 1e-2, "squared": False},
                "Boix-Adserà et al. 2022, GULP (NeurIPS)", _m.gulp_from_moments, True,
                description="Generalised linear-predictor distance"),
    MeasureSpec("rsa", rsa, "similarity", (-1.0, 1.0), "gram",
                {"rdm_method": "correlation", "compare": "spearman", **_SAMPLING},
                "Kriegeskorte et al. 2008, Representational similarity analysis (Front. Syst. Neurosci.)",
                None, True, _g.rsa_rows, description="Correlation of RDMs"),
    MeasureSpec("knn_overlap", knn_overlap, "similarity", (0.0, 1.0), "gram", {"k": 10, **_SAMPLING},
                "Huh et al. 2024, The Platonic Representation Hypothesis (ICML)", None, True,
                _g.knn_overlap_rows, description="Mutual k-NN overlap"),
]
for _spec in _SPECS:
    register(_spec)
del _spec
