"""``C += AᵀA`` (BLAS SYRK with β = 1) on numpy's own OpenBLAS, through ctypes.

numpy's matrix products overwrite their output; none accumulates into it. SciPy's
``blas.ssyrk`` does, but SciPy ships a second OpenBLAS whose idle worker threads spin-wait
after each call and then slow the numpy BLAS calls that follow (docs/measures.md). So this binds the
``cblas_?syrk`` of the OpenBLAS inside numpy's wheel (``scipy_cblas_ssyrk64_`` and
``…dsyrk64_``: 64-bit integers). Where it cannot be found or fails a self-check (other numpy
builds, other platforms) :func:`syrk_available` is False and callers use plain products
(:mod:`actdb.query.moments.kernel`, the one caller, then multiplies a sub-chunk at a time).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from typing import Any

import numpy as np

_ROW_MAJOR, _UPPER, _TRANS = 101, 121, 112
_NAMES: dict[np.dtype[Any], str] = {np.dtype(np.float32): "scipy_cblas_ssyrk64_",
                                    np.dtype(np.float64): "scipy_cblas_dsyrk64_"}


@functools.cache
def _functions() -> dict[np.dtype, Any] | None:
    here = os.path.dirname(np.__file__)
    paths = sorted(glob.glob(os.path.join(here, os.pardir, "numpy.libs", "*openblas64*"))
                   + glob.glob(os.path.join(here, ".dylibs", "*openblas64*")))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # the library numpy already loaded: same handle, same threads
            found: dict[np.dtype[Any], Any] = {dtype: getattr(lib, name) for dtype, name in _NAMES.items()}
        except (OSError, AttributeError):
            continue
        for dtype, fn in found.items():
            real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
            i64 = ctypes.c_int64
            fn.restype = None
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, real, ctypes.c_void_p,
                           i64, real, ctypes.c_void_p, i64]
        if _self_check(found):
            return found
    return None


def _self_check(found: dict[np.dtype, Any]) -> bool:
    """The binding gives numpy's own product on a small case (else it is not used)."""
    rng = np.random.default_rng(0)
    for dtype, fn in found.items():
        a = rng.standard_normal((37, 11)).astype(dtype)
        acc = np.ones((11, 11), dtype=dtype)
        _call(fn, a, acc)
        want = np.triu(a.T.astype(np.float64) @ a.astype(np.float64) + 1.0)
        lower_kept = np.array_equal(np.tril(acc, -1), np.tril(np.ones_like(acc), -1))
        if not (lower_kept and np.allclose(np.triu(acc), want, rtol=1e-5, atol=1e-5)):
            return False
    return True


def _call(fn: Any, a: np.ndarray, acc: np.ndarray) -> None:
    rows, d = a.shape
    fn(_ROW_MAJOR, _UPPER, _TRANS, d, rows, 1.0, a.ctypes.data, d, 1.0, acc.ctypes.data, d)


def syrk_available() -> bool:
    """Whether :func:`syrk_accumulate` can run here."""
    return _functions() is not None


def syrk_accumulate(a: np.ndarray, acc: np.ndarray) -> None:
    """``acc``'s upper triangle ``+= aᵀa`` in place; the lower triangle is left as it is.

    ``a`` is C-contiguous ``(rows, d)``, ``acc`` C-contiguous ``(d, d)``, both float32 or
    both float64. Raises ``RuntimeError`` where :func:`syrk_available` is False."""
    found = _functions()
    if found is None:
        raise RuntimeError("numpy's OpenBLAS SYRK is not available here; check syrk_available() first")
    if (a.dtype != acc.dtype or a.dtype not in found or a.ndim != 2 or acc.shape != (a.shape[1],) * 2
            or not a.flags.c_contiguous or not acc.flags.c_contiguous or not acc.flags.writeable):
        raise ValueError(f"syrk_accumulate needs C-contiguous (rows, d) and writable (d, d) arrays of one "
                         f"float dtype, got {a.dtype}{a.shape} and {acc.dtype}{acc.shape}")
    _call(found[a.dtype], a, acc)
