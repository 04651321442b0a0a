"""Moments-route measures: each is a function of one :class:`~actdb.query.moments.PairMoments`.

Notation: ``X̃``, ``Ỹ`` are the column-centred ``(n, d1)`` and ``(n, d2)`` matrices;
``Sxx = X̃ᵀX̃``, ``Syy = ỸᵀỸ``, ``Sxy = X̃ᵀỸ`` (sums, not divided by n). These functions are
the only implementation of each measure: the array API builds the moments and calls them.
"""

from __future__ import annotations

import numpy as np

from actdb.errors import InvalidInput, MeasureError
from actdb.query.moments import PairMoments

#: Eigenvalues of a covariance below ``RANK_TOL · λ_max`` are treated as zero (rank deficiency).
RANK_TOL = 1e-10


def _require_rows(pm: PairMoments, minimum: int, measure: str) -> None:
    if pm.n < minimum:
        raise MeasureError(f"{measure} needs at least {minimum} rows, got n={pm.n}")


def _require_variance(pm: PairMoments, measure: str) -> tuple[float, float]:
    tx, ty = float(np.trace(pm.sxx)), float(np.trace(pm.syy))
    for side, t in (("X", tx), ("Y", ty)):
        if not t > 0:
            raise MeasureError(
                f"{measure} is undefined: {side} has zero variance (every column is constant)"
            )
    return tx, ty


def linear_cka_from_moments(pm: PairMoments) -> float:
    """Linear CKA (Kornblith et al. 2019, eq. 5 in feature space):
    ``‖Sxy‖²_F / (‖Sxx‖_F ‖Syy‖_F)`` ∈ [0, 1]."""
    _require_rows(pm, 2, "linear_cka")
    _require_variance(pm, "linear_cka")
    num = _sq_frobenius(pm.sxy)
    den = float(np.linalg.norm(pm.sxx) * np.linalg.norm(pm.syy))
    return float(np.clip(num / den, 0.0, 1.0))


def _sq_frobenius(a: np.ndarray) -> float:
    """``‖a‖²_F`` as one dot product over ``a``'s memory (no squared temporary)."""
    flat = a.ravel(order="K")
    return float(flat @ flat)


def _hsic_unbiased(s_ab_sq: float, tr_a: float, tr_b: float, sum_ab: float, n: int) -> float:
    """Song et al. (2012) unbiased HSIC for linear kernels of centred features.

    With ``K = X̃X̃ᵀ``, ``k_i = K_ii`` and ``K̃ = K − diag(k)``: ``tr(K̃L̃) = ‖X̃ᵀỸ‖² − Σk_i l_i``,
    ``1ᵀK̃1 = −tr Sxx``, ``1ᵀK̃L̃1 = Σk_i l_i`` (because ``X̃ᵀ1 = 0``), and
    ``HSIC_u = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2·1ᵀK̃L̃1/(n−2)] / (n(n−3))``.
    """
    t = s_ab_sq - sum_ab + tr_a * tr_b / ((n - 1) * (n - 2)) - 2.0 * sum_ab / (n - 2)
    return t / (n * (n - 3))


def debiased_cka_from_moments(pm: PairMoments) -> float:
    """Debiased linear CKA: ``HSIC_u(K,L) / √(HSIC_u(K,K)·HSIC_u(L,L))`` with the unbiased
    HSIC of Song et al. (2012), as used by Nguyen et al. (2021) and Kornblith's reference code
    (``feature_space_linear_cka(debiased=True)``). Can be slightly negative; range [-1, 1]."""
    _require_rows(pm, 4, "debiased_cka")
    if not np.isfinite([pm.sum_kk, pm.sum_ll, pm.sum_kl]).all():
        raise InvalidInput("debiased_cka needs the row-norm sums, and these moments were accumulated "
                           "without them: build the Moments with row_norms=True")
    tx, ty = _require_variance(pm, "debiased_cka")
    n = pm.n
    xy = _hsic_unbiased(_sq_frobenius(pm.sxy), tx, ty, pm.sum_kl, n)
    xx = _hsic_unbiased(_sq_frobenius(pm.sxx), tx, tx, pm.sum_kk, n)
    yy = _hsic_unbiased(_sq_frobenius(pm.syy), ty, ty, pm.sum_ll, n)
    if not (xx > 0 and yy > 0):
        raise MeasureError(
            "debiased_cka is undefined: the unbiased HSIC of X or Y with itself is not positive "
            f"(HSIC_u(X,X)={xx:.3g}, HSIC_u(Y,Y)={yy:.3g}); use more rows or linear_cka"
        )
    return float(np.clip(xy / np.sqrt(xx * yy), -1.0, 1.0))


def _whitener(s: np.ndarray, keep: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``W`` ``(d, k)`` with ``WᵀSW = I`` on the non-null eigenspace of the PSD ``s``.

    With ``keep`` (SVCCA), only the top eigen-directions explaining ≥ ``keep`` of the total
    variance are kept. Returns ``(W, eigenvalues kept)``.
    """
    evals, evecs = np.linalg.eigh(s)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    top = evals[0] if evals.size else 0.0
    nonnull = evals > RANK_TOL * top if top > 0 else np.zeros(evals.shape, bool)
    k = int(nonnull.sum())
    if keep is not None and k:
        frac = np.cumsum(evals[:k]) / np.sum(evals[:k])
        k = int(np.searchsorted(frac, keep - 1e-12) + 1)
    return evecs[:, :k] / np.sqrt(evals[:k]), evals[:k]


def _cca(pm: PairMoments, keep: float | None,
         measure: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Canonical correlations ρ (descending) and whiteners/singular vectors for CCA.

    ``ρ = σ(W_xᵀ Sxy W_y)``, the singular values of the whitened cross-covariance;
    there are ``min(rank X, rank Y)`` of them. Returns ``(ρ, Wx, U, Wy, Vt)``.
    """
    _require_rows(pm, 2, measure)
    _require_variance(pm, measure)
    wx, _ = _whitener(pm.sxx, keep)
    wy, _ = _whitener(pm.syy, keep)
    u, rho, vt = np.linalg.svd(wx.T @ pm.sxy @ wy, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), wx, u, wy, vt


def mean_cca_from_moments(pm: PairMoments) -> float:
    """Mean canonical correlation ``(1/k) Σ ρ_i`` over ``k = min(rank X, rank Y)``
    (Hotelling 1936; as used by Raghu et al. 2017). Invariant to invertible linear maps."""
    rho, *_ = _cca(pm, None, "mean_cca")
    return float(np.mean(rho))


def svcca_from_moments(pm: PairMoments, keep: float = 0.99) -> float:
    """SVCCA (Raghu et al. 2017): project each side on its top principal directions explaining
    ≥ ``keep`` of the variance, then the mean canonical correlation of the projections."""
    if not 0 < keep <= 1:
        raise InvalidInput(f"svcca keep must be in (0, 1], got {keep}")
    rho, *_ = _cca(pm, keep, "svcca")
    return float(np.mean(rho))


def pwcca_from_moments(pm: PairMoments, weights: str = "x") -> float:
    """PWCCA (Morcos et al. 2018): ``Σ α_i ρ_i`` with ``α_i ∝ Σ_j |⟨h_i, x̃_j⟩|``, the projection
    of the centred neurons ``x̃_j`` (columns of X̃) on the unit canonical variates
    ``h_i = X̃ a_i``; ``⟨h_i, x̃_j⟩ = (Sxx a_i)_j``.

    Convention: ``weights="x"`` (default) weights by the first argument's neurons, so PWCCA
    is not symmetric; ``"y"`` weights by Y's; ``"smaller"`` uses the side with fewer neurons,
    as Morcos et al.'s reference code does; ``"mean"`` averages the two directions (symmetric,
    as repsim does).
    """
    if weights not in ("x", "y", "smaller", "mean"):
        raise InvalidInput(f"pwcca weights must be 'x', 'y', 'smaller' or 'mean', got {weights!r}")
    if weights == "mean":
        return 0.5 * (pwcca_from_moments(pm, "x") + pwcca_from_moments(pm, "y"))
    rho, wx, u, wy, vt = _cca(pm, None, "pwcca")
    side = weights
    if side == "smaller":
        side = "x" if pm.dims[0] <= pm.dims[1] else "y"
    k = rho.size
    proj = pm.sxx @ (wx @ u[:, :k]) if side == "x" else pm.syy @ (wy @ vt[:k].T)
    alpha = np.abs(proj).sum(axis=0)
    return float(np.sum(alpha * rho) / np.sum(alpha))


def procrustes_from_moments(pm: PairMoments, squared: bool = True) -> float:
    """Orthogonal Procrustes distance (Ding et al. 2021; Schönemann 1966) between the centred,
    Frobenius-normalised representations: ``min_R ‖X̂R − Ŷ‖²_F = 2 − 2‖X̂ᵀŶ‖_*`` with
    ``X̂ = X̃/‖X̃‖_F`` (zero-padding the narrower side). ``squared=True`` (default, Ding et al.)
    gives [0, 2]; ``squared=False`` its square root, a metric in [0, √2] (Williams et al. 2021)."""
    _require_rows(pm, 2, "procrustes")
    tx, ty = _require_variance(pm, "procrustes")
    nuc = float(np.sum(np.linalg.svd(pm.sxy, compute_uv=False))) / np.sqrt(tx * ty)
    d2 = max(0.0, 2.0 - 2.0 * min(nuc, 1.0))
    return d2 if squared else float(np.sqrt(d2))


def _solve_psd(s: np.ndarray, b: np.ndarray, ridge: float) -> np.ndarray:
    """``(S + ridge·I)⁺ b`` through the eigendecomposition (pseudo-inverse when ridge = 0)."""
    evals, evecs = np.linalg.eigh(s)
    evals = evals + ridge
    top = np.max(np.abs(evals)) if evals.size else 0.0
    inv = np.where(evals > RANK_TOL * top, 1.0 / np.where(evals > 0, evals, 1.0), 0.0)
    out: np.ndarray = evecs @ (inv[:, None] * (evecs.T @ b))
    return out


def linear_regression_from_moments(pm: PairMoments, ridge: float = 0.0) -> float:
    """In-sample R² of predicting Y from X by (ridge) least squares with an intercept:
    ``B = (Sxx + λI)⁺ Sxy``, ``R² = 1 − ‖Ỹ − X̃B‖²_F / ‖Ỹ‖²_F`` with
    ``‖Ỹ − X̃B‖² = tr Syy − 2 tr(BᵀSxy) + tr(BᵀSxxB)`` (λ = ``ridge`` in units of summed
    squares). Not symmetric; in [0, 1]. X with zero variance predicts nothing: R² = 0."""
    if ridge < 0:
        raise InvalidInput(f"linear_regression ridge must be >= 0, got {ridge}")
    _require_rows(pm, 2, "linear_regression")
    ty = float(np.trace(pm.syy))
    if not ty > 0:
        raise MeasureError("linear_regression is undefined: Y has zero variance (nothing to explain)")
    if not np.trace(pm.sxx) > 0:
        return 0.0
    b = _solve_psd(pm.sxx, pm.sxy, ridge)
    sse = ty - 2.0 * float(np.sum(b * pm.sxy)) + float(np.sum(b * (pm.sxx @ b)))
    return float(np.clip(1.0 - sse / ty, 0.0, 1.0))


def gulp_from_moments(pm: PairMoments, lam: float = 1e-2, squared: bool = False) -> float:
    """GULP distance (Boix-Adserà et al. 2022) with ridge ``λ = lam``, on covariances
    ``Σ = S/n`` of the centred representations:
    ``d²_λ = tr(Σx Σx,λ⁻¹ Σx Σx,λ⁻¹) + tr(Σy Σy,λ⁻¹ Σy Σy,λ⁻¹) − 2 tr(Σx,λ⁻¹ Σxy Σy,λ⁻¹ Σyx)``,
    ``Σ_λ = Σ + λI``: the expected squared difference of λ-ridge predictors fitted on X and on Y,
    maximised over unit-norm linear targets. Returns ``d_λ`` (``squared=False``, default) or
    ``d²_λ``. ``lam = 0`` uses pseudo-inverses (then d² = rank X + rank Y − 2 Σρ²)."""
    if lam < 0:
        raise InvalidInput(f"gulp lam must be >= 0, got {lam}")
    _require_rows(pm, 2, "gulp")
    _require_variance(pm, "gulp")
    n = pm.n
    terms = []
    halves = []
    for s in (pm.sxx / n, pm.syy / n):
        evals, evecs = np.linalg.eigh(s)
        evals = np.clip(evals, 0.0, None)
        shifted = evals + lam
        top = float(np.max(shifted))
        inv = np.where(shifted > RANK_TOL * top, 1.0 / np.where(shifted > 0, shifted, 1.0), 0.0)
        terms.append(float(np.sum((evals * inv) ** 2)))
        halves.append(evecs * np.sqrt(inv))  # Σ_λ^{-1/2} = V diag(inv^½) Vᵀ, right factor
    cross = halves[0].T @ (pm.sxy / n) @ halves[1]
    d2 = terms[0] + terms[1] - 2.0 * _sq_frobenius(cross)
    # below the rounding noise of the eigen-decompositions (~d·ε of the terms) d² is zero:
    # its square root would otherwise turn 1e-14 of noise into a distance of 1e-7
    noise = 16 * max(cross.shape) * np.finfo(np.float64).eps * (terms[0] + terms[1])
    d2 = d2 if d2 > noise else 0.0
    return d2 if squared else float(np.sqrt(d2))
