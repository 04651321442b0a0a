"""Input arrays of the moments engine: numpy or torch matrices ``(n_rows, d)``, checked finite.

Conversion and the finiteness check are the store's (:func:`actdb.store.parse.as_array`,
:func:`actdb.store.parse.check_finite`): one rule for torch tensors and one message for
NaN/Inf everywhere; this module adds what a measure accepts (numeric, at most 2-D).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actdb.errors import InvalidInput
from actdb.store import parse

#: What to do about NaN or Inf in a measure's input (the end of the NonFinite message).
MEASURE_FIX = "drop or repair those rows before computing a measure"


def to_numpy(a: Any, name: str = "X") -> np.ndarray:
    """``a`` as a 2-D numeric numpy array ``(n, d)`` in its own dtype (no float64 copy yet).

    Converted by :func:`~actdb.store.parse.as_array` (torch tensors recognised by duck
    typing, bfloat16 widened to float32). A 1-D input becomes one column. Raises
    :class:`InvalidInput` for non-numeric or >2-D input.
    """
    arr = parse.as_array(a, what=name)
    if arr.dtype.kind not in "fiub":
        raise InvalidInput(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be a 2-D (n_rows, d) array, got shape {arr.shape}")
    return arr


def as_matrix(a: Any, name: str = "X", *, check_finite: bool = True) -> np.ndarray:
    """:func:`to_numpy` then float64; raises :class:`~actdb.errors.NonFinite` naming the first
    bad value (:func:`~actdb.store.parse.check_finite`)."""
    out = np.asarray(to_numpy(a, name), dtype=np.float64)
    if check_finite:
        parse.check_finite(out, what=name, fix=MEASURE_FIX)
    return out
