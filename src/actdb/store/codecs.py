"""Codecs and stored dtypes of rep arrays: codec names and their zarr chains, dtype parsing, and
the conversion of float rows to and from their stored bit pattern.

``bfloat16`` has no NumPy dtype: it is stored as its raw 16 bits (``uint16``) with the
attribute ``actdb_dtype = "bfloat16"`` and widened on read.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from zarr.codecs import BloscCodec, ZstdCodec

from actdb.errors import InvalidInput

StoredDtype = Literal["float16", "bfloat16", "float32"]
STORED_DTYPES: tuple[StoredDtype, ...] = ("float16", "bfloat16", "float32")
NUMPY_STORAGE: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2"), "float32": np.dtype("<f4"),
}
FLOAT16_MAX = float(np.finfo(np.float16).max)

CODECS: tuple[str, ...] = ("lz4", "none", "lz4-bitshuffle", "zstd", "zstd-bitshuffle")
DEFAULT_CODEC = "lz4"


def codec_chain(name: str) -> list[Any] | None:
    """The bytes-to-bytes codec chain for a codec name (see bench/store_io.py); raises
    InvalidInput for a name not in :data:`CODECS`."""
    if name == "none":
        return None
    if name == "lz4-bitshuffle":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")]
    if name == "zstd":
        return [ZstdCodec(level=1)]
    if name == "zstd-bitshuffle":
        return [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")]
    if name == "lz4":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")]
    raise InvalidInput(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")


def _codec_key(codec: Any) -> tuple[str, Any, Any]:
    def plain(value: Any) -> Any:
        return getattr(value, "value", value)

    return type(codec).__name__, plain(getattr(codec, "cname", None)), plain(getattr(codec, "shuffle", None))


def codec_name(compressors: Any) -> str | None:
    """Which of :data:`CODECS` a compressor chain (``zarr.Array.compressors``) is, or None for
    any other chain."""
    found = [_codec_key(c) for c in (compressors or ())]
    for name in CODECS:
        if found == [_codec_key(c) for c in (codec_chain(name) or ())]:
            return name
    return None


def parse_dtype(value: object) -> StoredDtype:
    text = str(value).removeprefix("torch.")
    for name in STORED_DTYPES:
        if text == name:
            return name
    raise InvalidInput(f"stored dtype {value!r} is not supported; choose one of {', '.join(STORED_DTYPES)}")


def to_storage(block: np.ndarray, dtype: StoredDtype) -> np.ndarray:
    """float rows -> the stored bit pattern (``bfloat16``: round-to-nearest-even to 16 bits)."""
    if dtype == "bfloat16":
        f32 = np.ascontiguousarray(block, dtype=np.float32).view(np.uint32)
        rounding = ((f32 >> 16) & 1) + np.uint32(0x7FFF)
        return ((f32 + rounding) >> 16).astype(np.uint16)
    return np.ascontiguousarray(block, dtype=NUMPY_STORAGE[dtype])


def from_storage(block: np.ndarray, dtype: str) -> np.ndarray:
    """Stored bit pattern -> float32 (float16 stays float16 unless widened by the caller)."""
    if dtype == "bfloat16":
        return (block.astype(np.uint32) << 16).view(np.float32)
    return block
