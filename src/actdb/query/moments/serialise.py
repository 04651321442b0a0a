"""The one serialised form of moments: named numpy arrays, and ``.npz`` bytes of them.

It is what :meth:`Moments.to_arrays <actdb.query.moments.Moments.to_arrays>` returns
(``np.savez``-ready), what :meth:`~actdb.query.moments.Moments.to_bytes` compresses (the
Dask executor ships partial accumulators so) and what the per-rep cache keeps beside a
store's arrays as a Zarr group (:mod:`actdb.store.moments_files` writes the arrays as given).

Keys, format version 1: ``format_version``; ``precision``; ``dims`` ``(P,)`` int64; ``n``;
``center``, ``sum_u`` ``(D,)``; ``w`` ``(P,)``; ``v`` ``(P, D)``; ``q`` ``(P, P)`` (float64);
each accumulated block ``U_iᵀU_j`` (``i ≤ j``) as ``block_i_j`` ``(d_i, d_j)`` or, for a
diagonal block written with ``symmetric=True``, as its upper triangle ``block_i_i_upper``
(``np.triu_indices`` order: half the bytes; the per-rep cache stores its one block so).
Readers accept either form. A block that is absent was not accumulated (``pairs=``,
``skip_diag=``).
"""

from __future__ import annotations

import io
from typing import Any, NamedTuple

import numpy as np

from actdb.errors import InvalidInput

FORMAT_VERSION = 1


class Fields(NamedTuple):
    """What a serialised accumulator holds (the arguments of ``Moments(...)``)."""

    dims: tuple[int, ...]
    n: int
    center: np.ndarray
    sum_u: np.ndarray
    blocks: dict[tuple[int, int], np.ndarray]
    w: np.ndarray
    v: np.ndarray
    q: np.ndarray
    precision: str


def encode(f: Fields, *, symmetric: bool = False) -> dict[str, np.ndarray]:
    """``f`` as named arrays. ``symmetric=True``: the diagonal blocks are exactly symmetric
    (a settled accumulator's) and are written as their upper triangles."""
    out: dict[str, np.ndarray] = {
        "format_version": np.array(FORMAT_VERSION),
        "dims": np.array(f.dims, dtype=np.int64),
        "n": np.array(f.n, dtype=np.int64),
        "center": f.center, "sum_u": f.sum_u,
        "w": f.w, "v": f.v, "q": f.q,
        "precision": np.array(f.precision),
    }
    for (i, j), b in f.blocks.items():
        if symmetric and i == j:
            out[f"block_{i}_{i}_upper"] = b[np.triu_indices(b.shape[0])]
        else:
            out[f"block_{i}_{j}"] = b
    return out


def decode(arrays: Any) -> Fields:
    """Invert :func:`encode` (a dict of arrays, or an opened ``.npz``); raises
    :class:`InvalidInput` for another format version or a missing array."""
    try:
        version = int(arrays["format_version"])
        if version != FORMAT_VERSION:
            raise InvalidInput(
                f"Moments format version {version} is not supported (this actdb reads "
                f"{FORMAT_VERSION}); recompute the statistics"
            )
        dims = tuple(int(d) for d in arrays["dims"])
        p = len(dims)
        names = set(arrays.files if hasattr(arrays, "files") else arrays.keys())
        blocks: dict[tuple[int, int], np.ndarray] = {}
        for i in range(p):
            for j in range(i, p):
                if f"block_{i}_{j}" in names:
                    blocks[(i, j)] = np.array(arrays[f"block_{i}_{j}"], dtype=np.float64)
                elif i == j and f"block_{i}_{i}_upper" in names:
                    blocks[(i, i)] = _from_upper(np.asarray(arrays[f"block_{i}_{i}_upper"]), dims[i], i)
        return Fields(
            dims, n=int(arrays["n"]), center=np.array(arrays["center"], dtype=np.float64),
            sum_u=np.array(arrays["sum_u"], dtype=np.float64), blocks=blocks,
            w=np.array(arrays["w"], dtype=np.float64), v=np.array(arrays["v"], dtype=np.float64),
            q=np.array(arrays["q"], dtype=np.float64), precision=str(arrays["precision"]),
        )
    except KeyError as exc:
        raise InvalidInput(f"not a serialised Moments: missing {exc}") from None


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Compressed ``.npz`` bytes of :func:`encode` output."""
    buf = io.BytesIO()
    # numpy's stub types **kwds as arrays but also has a bool allow_pickle keyword, which a
    # dict[str, ndarray] could in principle fill: mypy cannot see that ours never does
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def decode_bytes(data: bytes) -> Fields:
    """Invert :func:`npz_bytes` then :func:`encode`."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return decode(z)


def _from_upper(upper: np.ndarray, d: int, i: int) -> np.ndarray:
    """The symmetric ``(d, d)`` block whose upper triangle is ``upper``."""
    if upper.shape != (d * (d + 1) // 2,):
        raise InvalidInput(f"not a serialised Moments: block_{i}_{i}_upper has shape {upper.shape}, "
                           f"not the {d * (d + 1) // 2} values of a {d} x {d} upper triangle")
    block = np.zeros((d, d))
    block[np.triu_indices(d)] = upper
    return block + np.triu(block, 1).T
