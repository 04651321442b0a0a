"""Input arrays of the moments engine: numpy or torch matrices ``(n_rows, d)``, checked finite."""

from __future__ import annotations

from typing import Any

import numpy as np

from actdb.errors import InvalidInput, NonFinite


def to_numpy(a: Any, name: str = "X") -> np.ndarray:
    """``a`` as a 2-D numeric numpy array ``(n, d)`` in its own dtype (no float64 copy yet).

    Torch tensors are recognised by duck typing (``detach``/``cpu``), so torch is never
    imported here; bfloat16/float16 tensors are widened to float32 (numpy has no bfloat16).
    A 1-D input becomes one column. Raises :class:`InvalidInput` for non-numeric or >2-D input.
    """
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        t = a.detach().cpu()
        if str(getattr(t, "dtype", "")) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        a = t.numpy()
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiub":
        raise InvalidInput(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be a 2-D (n_rows, d) array, got shape {arr.shape}")
    return arr


def as_matrix(a: Any, name: str = "X", *, check_finite: bool = True) -> np.ndarray:
    """:func:`to_numpy` then float64; raises :class:`NonFinite` naming the first bad row."""
    out = np.asarray(to_numpy(a, name), dtype=np.float64)
    if check_finite:
        check_all_finite(out, name)
    return out


def check_all_finite(arr: np.ndarray, name: str, first_row: int = 0) -> None:
    """Raise :class:`NonFinite` naming the first row of ``arr`` holding NaN or Inf (rows are
    numbered from ``first_row``: a chunk's place in a stream)."""
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise NonFinite(
            f"{name} contains NaN or Inf (first at row {first_row + int(np.argmin(finite))}); drop or "
            "repair those rows before computing a measure"
        )
