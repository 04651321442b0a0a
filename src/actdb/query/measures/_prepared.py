"""Gram-route measures split into a per-rep ``prepare`` and a per-pair ``compare``.

A plan comparing P reps on the Gram route builds each rep's ``(m, m)`` kernel (or RDM,
or neighbour sets) once, not once per pair: ``compare(prepare(X), prepare(Y))`` equals
the measure function on ``(X, Y)``. Only the exact-equivalent cases are split; anything
else (debiased HSIC) returns ``None`` from :func:`preparable` and runs pairwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actdb.errors import MeasureError
from actdb.query.measures import _gram_route as g


def preparable(name: str, params: dict[str, Any]) -> bool:
    if name in ("rbf_cka", "linear_cka", "debiased_cka"):
        return not params.get("debiased", False) and name != "debiased_cka"
    return name in ("rsa", "knn_overlap")


def state_key(name: str, params: dict[str, Any]) -> tuple[Any, ...]:
    """Reps prepared under equal keys share their state across measures of a plan."""
    if name == "rbf_cka":
        return ("rbf", params["sigma"], params["median"])
    if name == "linear_cka":
        return ("linear",)
    if name == "rsa":
        return ("rsa", params["rdm_method"], params["compare"])
    return ("knn", params["k"])


def prepare(name: str, x: np.ndarray, params: dict[str, Any]) -> Any:
    """The per-rep state of a sampled ``(m, d)`` float64 matrix."""
    if name in ("rbf_cka", "linear_cka"):
        k = g.rbf_gram(x, params["sigma"], params["median"]) if name == "rbf_cka" else g.linear_gram(x)
        kc = g._centre_gram(k)
        return kc, float(np.sqrt(np.sum(kc * kc)))
    if name == "rsa":
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
        return a / norm
    k = int(params["k"])
    if not 1 <= k < x.shape[0]:
        raise MeasureError(f"knn_overlap needs 1 <= k < rows; got k={k} with {x.shape[0]} rows")
    return g._knn(x, k)


def compare(name: str, sx: Any, sy: Any, params: dict[str, Any]) -> float:
    """The measure's value from two prepared states."""
    if name in ("rbf_cka", "linear_cka"):
        (kx, nx), (ky, ny) = sx, sy
        if not (nx > 0 and ny > 0):
            raise MeasureError("CKA is undefined: a Gram matrix has no (positive) centred energy — one side is "
                               "constant over the sampled rows")
        return float(np.clip(np.sum(kx * ky) / (nx * ny), 0.0, 1.0))
    if name == "rsa":
        return float(np.clip(sx @ sy, -1.0, 1.0))
    m, k = sx.shape
    hits = sum(np.intersect1d(a, b, assume_unique=True).size for a, b in zip(sx, sy, strict=True))
    return hits / (m * k)
