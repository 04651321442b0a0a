"""Activation-like test matrices: correlated Gaussians with a few large-variance, large-mean
outlier dimensions, as language-model residual streams have."""

from __future__ import annotations

import numpy as np


def activations(n: int, d: int, seed: int, *, rank: int = 16, outliers: int = 3) -> np.ndarray:
    """``(n, d)`` float64: low-rank structure + noise, ``outliers`` columns with ×20 scale, +30 mean."""
    rng = np.random.default_rng(seed)
    r = min(rank, d)
    x = rng.standard_normal((n, r)) @ rng.standard_normal((r, d)) / np.sqrt(r)
    x += 0.3 * rng.standard_normal((n, d))
    k = min(outliers, d)
    x[:, :k] = 20.0 * x[:, :k] + 30.0
    return x


def related_pair(n: int, d1: int, d2: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """X and a noisy linear transform of it (so measures are away from their bounds)."""
    rng = np.random.default_rng(seed + 1000)
    x = activations(n, d1, seed)
    y = np.tanh((x - x.mean(0)) / (x.std(0) + 1e-12)) @ rng.standard_normal((d1, d2))
    y += activations(n, d2, seed + 1) * 0.5
    return x, y
