"""The cross-validated ridge probe of one rep from streaming moments: two passes, memory independent of n.

Pass 1 accumulates, per fold, the moments of the features ``X`` (``d`` columns) and the
one-hot labels ``Y`` (``k`` columns) as a two-rep :class:`~actdb.query.moments.Moments`
(blocks ``XᵀX``, ``XᵀY``, ``YᵀY`` and the means). A fold's training moments are the total
minus the fold's own (exact algebra), from which the centred ridge solution is
``W = (Sxx + λI)⁻¹ Sxy`` with ``λ = ridge · trace(Sxx) / d`` and the intercept
``b = ȳ − x̄ W`` (what scikit-learn's ``Ridge(alpha=λ)`` fits on the same rows). Pass 2 reads
the rows again and scores each held-out row with its fold's ``(W, b)``: the predicted class
is the argmax. When the class names are numbers, their value is one more column of ``Y`` and its
held-out squared error gives R². Memory: ``folds × (d + k)²`` floats, whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from actdb.query.moments import Moments, PairMoments
from actdb.query.passes import GEMM_BUDGET
from actdb.query.rows import Source


@dataclass(frozen=True)
class RidgeFit:
    """One fold's ridge solution: ``scores = x @ weights + intercept``."""

    weights: np.ndarray  # (d, k)
    intercept: np.ndarray  # (k,)
    alpha: float  # the absolute penalty λ


def solve_ridge(pm: PairMoments, ridge: float) -> RidgeFit:
    """Centred ridge from the moments of (X, Y): ``λ = ridge · trace(Sxx) / d`` (``ridge``
    itself when the features are constant)."""
    d = pm.sxx.shape[0]
    scale = float(np.trace(pm.sxx)) / d
    alpha = ridge * scale if scale > 0 else ridge
    lhs = np.array(pm.sxx, dtype=np.float64, copy=True)
    lhs[np.diag_indices(d)] += alpha
    try:
        weights = np.linalg.solve(lhs, pm.sxy)
    except np.linalg.LinAlgError:  # singular only with ridge = 0 on rank-deficient features
        weights = np.linalg.lstsq(lhs, pm.sxy, rcond=None)[0]
    return RidgeFit(weights, pm.mean_y - pm.mean_x @ weights, alpha)


def _blocks(source: Source, fold_of_row: np.ndarray,
            block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(features, row-space positions, folds) per block of the source's rows."""
    pos = 0
    for block in source.blocks(block_rows):
        rows = len(block)
        if rows:
            yield block, np.arange(pos, pos + rows), fold_of_row[pos: pos + rows]
        pos += rows


def _targets(codes: np.ndarray, n_classes: int, values: np.ndarray | None) -> np.ndarray:
    """The Y block of rows with classes ``codes``: one-hot, plus the numeric value when given."""
    eye = np.eye(n_classes)
    return eye[codes] if values is None else np.hstack([eye[codes], values[codes][:, None]])


def fold_moments(source: Source, codes: np.ndarray, n_classes: int, fold_of_row: np.ndarray, folds: int,
                 block_rows: int, values: np.ndarray | None = None) -> list[Moments]:
    """Pass 1: one (X, Y) accumulator per fold; Y is one-hot (``k`` columns), plus a last column
    holding each class's numeric value when ``values`` ``(k,)`` is given (a regression target;
    ridge is column by column, so the class columns' fits are unchanged by it)."""
    d = source.array.shape[1]
    width = n_classes + (values is not None)
    accs = [Moments.empty([d, width], budget_bytes=GEMM_BUDGET, row_norms=False) for _ in range(folds)]
    for block, pos, fold in _blocks(source, fold_of_row, block_rows):
        y = _targets(codes[pos], n_classes, values)
        for f in np.unique(fold):
            mask = fold == f
            accs[int(f)].update([block[mask], y[mask]])
    return accs


def fit_folds(accs: list[Moments], ridge: float) -> list[RidgeFit]:
    """Each fold's ridge fit on the other folds' rows (training moments = total − fold, exact)."""
    total = sum(accs[1:], accs[0].copy())
    return [solve_ridge((total - acc).pair(0, 1), ridge) for acc in accs]


@dataclass(frozen=True)
class RidgeScore:
    """Held-out results: rows classified right, and (numeric target) the squared error sum."""

    correct: int
    sse: float | None
    fits: list[RidgeFit]


def held_out(source: Source, codes: np.ndarray, n_classes: int, fold_of_row: np.ndarray, fits: list[RidgeFit],
             block_rows: int, values: np.ndarray | None = None) -> RidgeScore:
    """Pass 2: each row scored by the fit that did not see it: argmax over the class columns
    (and the squared error of the value column when there is one)."""
    correct, sse = 0, 0.0
    for block, pos, fold in _blocks(source, fold_of_row, block_rows):
        x = np.asarray(block, dtype=np.float64)
        for f in np.unique(fold):
            mask = fold == f
            fit = fits[int(f)]
            scores = x[mask] @ fit.weights + fit.intercept
            truth = codes[pos[mask]]
            correct += int(np.count_nonzero(np.argmax(scores[:, :n_classes], axis=1) == truth))
            if values is not None:
                sse += float(np.sum((scores[:, n_classes] - values[truth]) ** 2))
    return RidgeScore(correct, None if values is None else sse, fits)


def ridge_probe(source: Source, codes: np.ndarray, n_classes: int, fold_of_row: np.ndarray, folds: int, *,
                ridge: float, block_rows: int, values: np.ndarray | None = None) -> RidgeScore:
    """The held-out results and the per-fold fits (two passes over the rows)."""
    fits = fit_folds(fold_moments(source, codes, n_classes, fold_of_row, folds, block_rows, values), ridge)
    return held_out(source, codes, n_classes, fold_of_row, fits, block_rows, values)
