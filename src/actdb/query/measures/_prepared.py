"""Gram-route measures split into a per-rep ``prepare`` and a per-pair ``compare``.

A plan comparing P reps on the Gram route builds each rep's ``(m, m)`` kernel (or RDM,
or neighbour sets) once, not once per pair: ``compare(prepare(X), prepare(Y))`` equals
the measure function on ``(X, Y)``. Each split is a :class:`Prepared` that the measure's
spec carries (``MeasureSpec.prepared``); only the exact-equivalent cases are split
(debiased HSIC is not: :func:`preparable` is then false and the pair runs whole).
The name-keyed functions at the end are what the executor calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from actdb.errors import MeasureError
from actdb.query.measures import _gram_route as g
from actdb.query.measures._spec import Prepared, get_measure


def _centred_kernel(k: np.ndarray) -> tuple[np.ndarray, float]:
    kc = g._centre_gram(k)
    return kc, float(np.sqrt(np.sum(kc * kc)))


def _compare_kernels(sx: Any, sy: Any, _params: Mapping[str, Any]) -> float:
    (kx, nx), (ky, ny) = sx, sy
    if not (nx > 0 and ny > 0):
        raise MeasureError("CKA is undefined: a Gram matrix has no (positive) centred energy — one side is "
                           "constant over the sampled rows")
    return float(np.clip(np.sum(kx * ky) / (nx * ny), 0.0, 1.0))


def _prepare_rdm(x: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    if params["compare"] not in ("spearman", "pearson"):
        raise MeasureError(f"rsa compare must be 'spearman' or 'pearson', got {params['compare']!r}")
    iu = np.triu_indices(x.shape[0], k=1)
    a = g.rdm(x, params["rdm_method"])[iu]
    if params["compare"] == "spearman":
        a = g._rank(a)
    a = a - a.mean()
    norm = float(np.sqrt(a @ a))
    if not norm > 0:
        raise MeasureError("rsa is undefined: an RDM is constant (all dissimilarities equal)")
    out: np.ndarray = a / norm
    return out


def _prepare_neighbours(x: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    k = int(params["k"])
    if not 1 <= k < x.shape[0]:
        raise MeasureError(f"knn_overlap needs 1 <= k < rows; got k={k} with {x.shape[0]} rows")
    return g._knn(x, k)


def _compare_neighbours(sx: Any, sy: Any, _params: Mapping[str, Any]) -> float:
    m, k = sx.shape
    hits = sum(np.intersect1d(a, b, assume_unique=True).size for a, b in zip(sx, sy, strict=True))
    return float(hits / (m * k))


#: Linear CKA on its Gram form: the centred linear kernel and its Frobenius norm.
LINEAR_KERNEL = Prepared(
    key=lambda _p: ("linear",),
    prepare=lambda x, _p: _centred_kernel(g.linear_gram(x)),
    compare=_compare_kernels,
)
#: RBF CKA (biased HSIC only): the centred RBF kernel and its Frobenius norm.
RBF_KERNEL = Prepared(
    key=lambda p: ("rbf", p["sigma"], p["median"]),
    prepare=lambda x, p: _centred_kernel(g.rbf_gram(x, p["sigma"], p["median"])),
    compare=_compare_kernels,
    applies=lambda p: not p.get("debiased", False),
)
#: RSA: the centred, unit-norm (ranked) upper triangle of the RDM.
RDM_TRIANGLE = Prepared(
    key=lambda p: ("rsa", p["rdm_method"], p["compare"]),
    prepare=_prepare_rdm,
    compare=lambda sx, sy, _p: float(np.clip(sx @ sy, -1.0, 1.0)),
)
#: kNN overlap: each row's k nearest neighbours.
NEIGHBOURS = Prepared(
    key=lambda p: ("knn", p["k"]),
    prepare=_prepare_neighbours,
    compare=_compare_neighbours,
)


def _form(name: str) -> Prepared:
    form = get_measure(name).prepared
    if form is None:
        raise MeasureError(f"measure {name!r} has no prepared form")
    return form


def preparable(name: str, params: dict[str, Any]) -> bool:
    """Whether ``name`` runs as prepare/compare with these parameters."""
    form = get_measure(name).prepared
    return form is not None and form.applies(params)


def state_key(name: str, params: dict[str, Any]) -> tuple[Any, ...]:
    """Reps prepared under equal keys share their state across measures of a plan."""
    return _form(name).key(params)


def prepare(name: str, x: np.ndarray, params: dict[str, Any]) -> Any:
    """The per-rep state of a sampled ``(m, d)`` float64 matrix."""
    return _form(name).prepare(x, params)


def compare(name: str, sx: Any, sy: Any, params: dict[str, Any]) -> float:
    """The measure's value from two prepared states."""
    return _form(name).compare(sx, sy, params)
