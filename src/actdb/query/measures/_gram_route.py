"""Gram-route measures: computed from ``(m, m)`` row-by-row matrices of a row sample.

Rows are sampled with :func:`sample_rows` (seeded, without replacement, default 4,096;
all rows, hence exact, when ``n`` is not larger), and the sample is reported in
:class:`RowSample` so a cached result records exactly which rows it used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actdb.errors import InvalidInput, MeasureError

DEFAULT_SAMPLE = 4096


@dataclass(frozen=True)
class RowSample:
    """The rows a Gram-route value was computed on: ``indices`` (sorted) out of ``n``."""

    n: int
    size: int
    seed: int
    indices: np.ndarray
    exact: bool

    def describe(self) -> dict[str, object]:
        """JSON-ready summary (``indices`` omitted: they follow from n, size and seed)."""
        return {"n": self.n, "size": self.size, "seed": self.seed, "exact": self.exact}


def sample_rows(n: int, size: int | None = DEFAULT_SAMPLE, seed: int = 0) -> RowSample:
    """``size`` distinct rows of ``range(n)`` drawn with ``numpy.random.default_rng(seed)``;
    every row (``exact=True``) when ``size`` is ``None`` or ``n <= size``."""
    if size is not None and size < 2:
        raise InvalidInput(f"sample size must be >= 2 rows, got {size}")
    if size is None or n <= size:
        return RowSample(n, n, seed, np.arange(n), True)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return RowSample(n, size, seed, idx, False)


def _centre_gram(k: np.ndarray) -> np.ndarray:
    """``HKH`` with ``H = I − 11ᵀ/m``."""
    k = k - k.mean(axis=0, keepdims=True)
    out: np.ndarray = k - k.mean(axis=1, keepdims=True)
    return out


def hsic(k: np.ndarray, l: np.ndarray, debiased: bool = False) -> float:  # noqa: E741 - the papers' K, L
    """HSIC of two ``(m, m)`` kernel matrices: biased ``tr(KHLH)/(m−1)²`` (Gretton et al. 2005)
    or the unbiased estimator of Song et al. (2012) (needs m ≥ 4)."""
    m = int(k.shape[0])
    if not debiased:
        return float(np.sum(_centre_gram(k) * _centre_gram(l))) / (m - 1) ** 2
    if m < 4:
        raise MeasureError(f"the unbiased HSIC needs at least 4 rows, got {m}")
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    k1, l1 = kt.sum(axis=0), lt.sum(axis=0)
    t = float(np.sum(kt * lt)) + k1.sum() * l1.sum() / ((m - 1) * (m - 2)) - 2.0 * float(k1 @ l1) / (m - 2)
    return float(t / (m * (m - 3)))


def cka_from_grams(k: np.ndarray, l: np.ndarray, debiased: bool = False) -> float:  # noqa: E741 - K, L
    """``HSIC(K, L) / √(HSIC(K, K)·HSIC(L, L))`` (Kornblith et al. 2019)."""
    kk, ll = hsic(k, k, debiased), hsic(l, l, debiased)
    if not (kk > 0 and ll > 0):
        raise MeasureError(
            "CKA is undefined: a Gram matrix has no (positive) centred energy — one side is "
            "constant over the sampled rows"
        )
    value = hsic(k, l, debiased) / np.sqrt(kk * ll)
    return float(np.clip(value, -1.0 if debiased else 0.0, 1.0))


def linear_gram(x: np.ndarray) -> np.ndarray:
    """``K = X̃X̃ᵀ`` ``(m, m)`` of the column-centred rows."""
    xc = x - x.mean(axis=0)
    out: np.ndarray = xc @ xc.T
    return out


def linear_cka_rows(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Linear (or debiased) CKA through ``(m, m)`` Grams; equals the moments route exactly."""
    return cka_from_grams(linear_gram(x), linear_gram(y), debiased)


def debiased_cka_rows(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased linear CKA through ``(m, m)`` Grams (unbiased HSIC, needs m ≥ 4)."""
    return linear_cka_rows(x, y, debiased=True)


def squared_distances(x: np.ndarray) -> np.ndarray:
    """``D_ij = ‖x_i − x_j‖²`` ``(m, m)``, clipped at 0 with an exact zero diagonal."""
    sq = np.einsum("ij,ij->i", x, x)
    d: np.ndarray = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d, 0.0, out=d)
    np.fill_diagonal(d, 0.0)
    return d


def rbf_gram(x: np.ndarray, sigma: float = 0.8, median: str = "offdiag") -> np.ndarray:
    """``K_ij = exp(−‖x_i−x_j‖² / (2 (σ·m)²))`` with ``m`` the median pairwise distance, so the
    bandwidth is the fraction ``sigma`` of it (Kornblith et al. 2019).

    Convention: ``median="offdiag"`` (default) takes the median over the ``m(m−1)/2`` distinct
    pairs (as repsim does); ``median="all"`` over all ``m²`` entries including the zero
    diagonal, as Kornblith et al.'s reference ``gram_rbf`` does (identical to it when m is odd;
    it takes the median of squared distances).
    """
    if not sigma > 0:
        raise InvalidInput(f"rbf_cka sigma must be > 0, got {sigma}")
    d = squared_distances(x)
    dist = np.sqrt(d)
    if median == "all":
        med = float(np.median(dist))
    elif median == "offdiag":
        med = float(np.median(dist[np.triu_indices_from(dist, k=1)]))
    else:
        raise InvalidInput(f"rbf_cka median must be 'offdiag' or 'all', got {median!r}")
    if not med > 0:
        raise MeasureError(
            "rbf_cka is undefined: the median pairwise distance is 0 (most sampled rows are "
            "identical), so the RBF bandwidth would be 0"
        )
    return np.exp(-d / (2.0 * (sigma * med) ** 2))


def rbf_cka_rows(
    x: np.ndarray, y: np.ndarray, sigma: float = 0.8, median: str = "offdiag", debiased: bool = False
) -> float:
    """CKA with RBF kernels (Kornblith et al. 2019, §4)."""
    return cka_from_grams(rbf_gram(x, sigma, median), rbf_gram(y, sigma, median), debiased)


def _rank(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), 1-based."""
    order = np.argsort(a)  # tie order is irrelevant: tied values share their mean rank
    sorted_a = a[order]
    _, first, counts = np.unique(sorted_a, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(avg, counts)
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray, what: str) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a @ a) * (b @ b)))
    if not den > 0:
        raise MeasureError(f"rsa is undefined: {what} is constant (all dissimilarities equal)")
    return float(np.clip((a @ b) / den, -1.0, 1.0))


def rdm(x: np.ndarray, method: str = "correlation") -> np.ndarray:
    """Representational dissimilarity matrix ``(m, m)``: ``1 − Pearson(x_i, x_j)`` between rows
    (``"correlation"``, Kriegeskorte et al. 2008) or squared Euclidean (``"euclidean"``)."""
    if method == "euclidean":
        return squared_distances(x)
    if method != "correlation":
        raise InvalidInput(f"rsa rdm must be 'correlation' or 'euclidean', got {method!r}")
    if x.shape[1] < 2:
        raise MeasureError("rsa with correlation RDMs needs at least 2 columns")
    xc = x - x.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", xc, xc))
    if np.any(norms == 0):
        bad = int(np.flatnonzero(norms == 0)[0])
        raise MeasureError(
            f"rsa with correlation RDMs is undefined: sampled row {bad} is constant across "
            "columns (zero variance), so its Pearson correlation is undefined"
        )
    z = xc / norms[:, None]
    out: np.ndarray = 1.0 - z @ z.T
    return out


def rsa_rows(
    x: np.ndarray, y: np.ndarray, rdm_method: str = "correlation", compare: str = "spearman"
) -> float:
    """RSA (Kriegeskorte et al. 2008): correlation of the upper triangles (i < j) of the two
    RDMs, Spearman (default) or Pearson."""
    if compare not in ("spearman", "pearson"):
        raise InvalidInput(f"rsa compare must be 'spearman' or 'pearson', got {compare!r}")
    iu = np.triu_indices(x.shape[0], k=1)
    a, b = rdm(x, rdm_method)[iu], rdm(y, rdm_method)[iu]
    if compare == "spearman":
        a, b = _rank(a), _rank(b)
    return _pearson(a, b, "an RDM")


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(m, k)`` (ascending) of each row's k most cosine-similar other rows (ties →
    lower index)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if np.any(norms == 0):
        bad = int(np.flatnonzero(norms == 0)[0])
        raise MeasureError(f"knn_overlap is undefined: sampled row {bad} is all zeros (no direction)")
    z = x / norms[:, None]
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    # the k-th largest similarity per row, then everything above it plus, among rows tied
    # with it, the lowest indices: O(m²) instead of a full sort (the set, in index order)
    kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1]
    above = sim > kth[:, None]
    tied = sim == kth[:, None]
    need = k - above.sum(axis=1)
    take = above | (tied & (np.cumsum(tied, axis=1) <= need[:, None]))
    return np.nonzero(take)[1].reshape(x.shape[0], k)


def knn_overlap_rows(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Mutual k-NN alignment (Huh et al. 2024): ``(1/m) Σ_i |N_k^X(i) ∩ N_k^Y(i)| / k`` with
    neighbours by cosine similarity, excluding the row itself. In [0, 1]."""
    m = x.shape[0]
    if not 1 <= k < m:
        raise MeasureError(f"knn_overlap needs 1 <= k < rows; got k={k} with {m} rows")
    nx, ny = _knn(x, k), _knn(y, k)
    hits = 0
    for a, b in zip(nx, ny, strict=True):
        hits += np.intersect1d(a, b, assume_unique=True).size
    return float(hits / (m * k))
