"""Fitting the stitch: the closed-form (ridge) affine map ``Ŷ = X W + b`` from A's activations
to B's, from the streamed moments of the fit rows (A is not re-run)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from actdb.query.moments import Moments

if TYPE_CHECKING:
    import torch

    from actdb.store.arrays import RepArray


@dataclass(frozen=True)
class AffineMap:
    """``x ↦ x @ weight + bias``: ``weight`` ``(d_A, d_B)``, ``bias`` ``(d_B,)``; ``ridge_absolute``
    is the penalty the fit used (0 for a map that was not fitted)."""

    weight: np.ndarray
    bias: np.ndarray
    ridge_absolute: float = 0.0

    def tensors(self, *, trainable: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)`` as float32 tensors (leaves with gradients when ``trainable``)."""
        import torch

        return (torch.tensor(self.weight, dtype=torch.float32, requires_grad=trainable),
                torch.tensor(self.bias, dtype=torch.float32, requires_grad=trainable))


def fit_affine(blocks: Iterable[tuple[np.ndarray, np.ndarray]], d_a: int, d_b: int, ridge: float) -> AffineMap:
    """Ridge least squares of Y ``(n, d_B)`` on X ``(n, d_A)`` plus an intercept, from row-aligned
    blocks ``(X_k, Y_k)`` streamed once. ``ridge`` is relative: the absolute penalty is
    ``ridge`` × the mean eigenvalue of A's centred XᵀX (its trace / d_A), so the same value
    suits any scale and row count; ``ridge=0`` is ordinary least squares."""
    m = Moments.empty([d_a, d_b])
    for xa, xb in blocks:
        if len(xa):
            m.update([xa, xb])
    pm = m.pair(0, 1)
    absolute = float(ridge) * max(float(np.trace(pm.sxx)) / d_a, 1e-12)
    weight = np.linalg.solve(pm.sxx + absolute * np.eye(d_a), pm.sxy)
    return AffineMap(weight, pm.mean_y - pm.mean_x @ weight, absolute)


def fit_reps(a: RepArray, b: RepArray, rows: np.ndarray, ridge: float) -> AffineMap:
    """:func:`fit_affine` of B's stored activations on A's over token ``rows``, read in blocks."""
    from actdb.query.rows import Source

    block = max(a.chunk_rows, b.chunk_rows) * 4
    return fit_affine(zip(Source(a, rows).blocks(block), Source(b, rows).blocks(block)),
                      a.shape[1], b.shape[1], ridge)
