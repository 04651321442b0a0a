"""Representation (dis)similarity measures: plain functions over two row-aligned matrices.

Each measure is ``name(X, Y, **params) -> float`` with ``X`` ``(n, d1)`` and ``Y`` ``(n, d2)``
(numpy arrays or torch tensors, any float dtype; all arithmetic in float64), plus
:data:`REGISTRY` mapping the name to its :class:`MeasureSpec` (kind, range, route, parameter
defaults read from the function's signature, citation, implementations); :func:`plan_route`
is the route a plan runs a measure on. Moments-route measures are computed from a streaming
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
from actdb.query.measures import _prepared as _p
from actdb.query.measures._api import DEFAULT_SHARDS, MeasureResult, _call, evaluate, jackknife_stderr
from actdb.query.measures._gram_route import DEFAULT_SAMPLE, RowSample, cka_from_grams, hsic, rdm, sample_rows
from actdb.query.measures._routing import choose_route, plan_route
from actdb.query.measures._spec import REGISTRY, Imported, ImportedParams, MeasureSpec, Prepared, get_measure, register
from actdb.query.moments import Moments, PairMoments, Precision

__all__ = [
    "DEFAULT_SAMPLE", "DEFAULT_SHARDS", "REGISTRY", "Imported", "ImportedParams", "MeasureResult", "MeasureSpec",
    "Moments", "PairMoments", "Prepared", "RowSample", "choose_route", "cka_from_grams", "debiased_cka", "evaluate",
    "get_measure", "gulp", "hsic", "jackknife_stderr", "knn_overlap", "linear_cka", "linear_regression", "mean_cca",
    "plan_route", "procrustes", "pwcca", "rbf_cka", "rdm", "register", "rsa", "sample_rows", "svcca",
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
    return evaluate("rbf_cka", X, Y, sigma=sigma, median=median, debiased=debiased, sample=sample,
                    seed=seed).value


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
    return evaluate("rsa", X, Y, rdm_method=rdm_method, compare=compare, sample=sample, seed=seed).value


def knn_overlap(X: Any, Y: Any, *, k: int = 10, sample: int | None = DEFAULT_SAMPLE, seed: int = 0) -> float:
    """Mutual k-nearest-neighbour overlap (Huh et al. 2024), cosine neighbours, self excluded."""
    return evaluate("knn_overlap", X, Y, k=k, sample=sample, seed=seed).value


_STITCHING = "actdb.query.stitching"  # imports this package: listed by import path, resolved when used
_SPECS = [
    MeasureSpec(name="linear_cka", func=linear_cka, kind="similarity", value_range=(0.0, 1.0),
                route="moments", from_moments=_m.linear_cka_from_moments,
                from_rows=_g.linear_cka_rows, prepared=_p.LINEAR_KERNEL,
                citation="Kornblith et al. 2019, Similarity of Neural Network Representations Revisited (ICML)",
                description="Linear centred kernel alignment"),
    MeasureSpec(name="debiased_cka", func=debiased_cka, kind="similarity", value_range=(-1.0, 1.0),
                route="moments", from_moments=_m.debiased_cka_from_moments, row_norms=True,
                from_rows=_g.debiased_cka_rows, min_rows=4,
                citation="Song et al. 2012 (unbiased HSIC, JMLR); Nguyen et al. 2021 (ICLR)",
                description="Linear CKA with the unbiased HSIC estimator"),
    MeasureSpec(name="rbf_cka", func=rbf_cka, kind="similarity", value_range=(0.0, 1.0),
                route="gram", from_rows=_g.rbf_cka_rows, prepared=_p.RBF_KERNEL,
                citation="Kornblith et al. 2019 (ICML)",
                description="CKA with RBF kernels, bandwidth a fraction of the median distance"),
    MeasureSpec(name="mean_cca", func=mean_cca, kind="similarity", value_range=(0.0, 1.0),
                route="moments", from_moments=_m.mean_cca_from_moments,
                citation="Hotelling 1936, Relations between two sets of variates (Biometrika)",
                description="Mean canonical correlation"),
    MeasureSpec(name="svcca", func=svcca, kind="similarity", value_range=(0.0, 1.0),
                route="moments", from_moments=_m.svcca_from_moments,
                citation="Raghu et al. 2017, SVCCA (NeurIPS)",
                description="Mean CCA after SVD truncation to 99% variance"),
    MeasureSpec(name="pwcca", func=pwcca, kind="similarity", value_range=(0.0, 1.0),
                route="moments", from_moments=_m.pwcca_from_moments, symmetric=False,
                citation="Morcos et al. 2018, Insights on representational similarity (NeurIPS)",
                description="Projection-weighted CCA"),
    MeasureSpec(name="procrustes", func=procrustes, kind="distance", value_range=(0.0, 2.0),
                route="moments", from_moments=_m.procrustes_from_moments,
                citation="Ding et al. 2021, Grounding Representation Similarity (NeurIPS)",
                description="Orthogonal Procrustes distance"),
    MeasureSpec(name="linear_regression", func=linear_regression, kind="similarity", value_range=(0.0, 1.0),
                route="moments", from_moments=_m.linear_regression_from_moments, symmetric=False,
                citation="Kornblith et al. 2019 §2 (linear regression fit, R²)",
                description="R² predicting Y from X"),
    MeasureSpec(name="gulp", func=gulp, kind="distance", value_range=(0.0, float("inf")),
                route="moments", from_moments=_m.gulp_from_moments,
                citation="Boix-Adserà et al. 2022, GULP (NeurIPS)",
                description="Generalised linear-predictor distance"),
    MeasureSpec(name="rsa", func=rsa, kind="similarity", value_range=(-1.0, 1.0),
                route="gram", from_rows=_g.rsa_rows, prepared=_p.RDM_TRIANGLE,
                citation="Kriegeskorte et al. 2008, Representational similarity analysis (Front. Syst. Neurosci.)",
                description="Correlation of RDMs"),
    MeasureSpec(name="knn_overlap", func=knn_overlap, kind="similarity", value_range=(0.0, 1.0),
                route="gram", from_rows=_g.knn_overlap_rows, prepared=_p.NEIGHBOURS,
                citation="Huh et al. 2024, The Platonic Representation Hypothesis (ICML)",
                description="Mutual k-NN overlap"),
    MeasureSpec(name="stitching", func=Imported(f"{_STITCHING}:stitching"), kind="distance",
                value_range=(float("-inf"), float("inf")), route="model", symmetric=False,
                params=ImportedParams(f"{_STITCHING}:PARAMS"),
                task_params=Imported(f"{_STITCHING}:task_params"),
                citation="Bansal, Nakkiran & Barak 2021; Csiszárik et al. 2021; Brown et al. 2023 (EMNLP)",
                description="Stitching penalty: B's held-out loss with A's hidden.i mapped (affine) into B's "
                            "hidden.j, minus B's own loss."),
]
for _spec in _SPECS:
    register(_spec)
del _spec
