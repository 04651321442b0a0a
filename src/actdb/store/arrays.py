"""Rep arrays on Zarr v3: layout, codecs, the lazy read handle, checksums.

One array per rep, shape ``(n_rows, dim)``, chunked along rows only (chunks of about
2 MiB) and sharded (about 32 chunks, 64 MiB, per shard file), so a rep of a million
rows is a handful of files. Paths come from catalog ids (:func:`rep_path`), never from
user-supplied names. ``bfloat16`` has no NumPy dtype: it is stored as its raw 16 bits
(``uint16``) with the attribute ``actdb_dtype = "bfloat16"`` and widened on read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import BloscCodec, ZstdCodec

from actdb.errors import CorruptStore, InvalidInput

StoredDtype = Literal["float16", "bfloat16", "float32"]
STORED_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32")
_NUMPY_STORAGE = {"float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2"), "float32": np.dtype("<f4")}
FLOAT16_MAX = float(np.finfo(np.float16).max)

CHUNK_BYTES = 2 << 20
CHUNKS_PER_SHARD = 32


def _codec(name: str) -> list[Any] | None:
    """The bytes-to-bytes codec chain for a codec name (see bench/store_io.py)."""
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


CODECS: tuple[str, ...] = ("lz4", "none", "lz4-bitshuffle", "zstd", "zstd-bitshuffle")
DEFAULT_CODEC = "lz4"


def parse_dtype(value: object) -> StoredDtype:
    text = str(value).removeprefix("torch.")
    if text not in STORED_DTYPES:
        raise InvalidInput(f"stored dtype {value!r} is not supported; choose one of {', '.join(STORED_DTYPES)}")
    return text  # type: ignore[return-value]


def parse_arrays_url(value: object) -> str:
    """Where a new store keeps its arrays: a URL fsspec knows (``s3://bucket/prefix``,
    ``gs://...``, ``memory://...``) or ``file://`` + an absolute path."""
    if not isinstance(value, str) or "://" not in value or any(ord(c) < 32 for c in value):
        raise InvalidInput(f"arrays_url {value!r:.80} is not a URL such as 's3://bucket/prefix'")
    scheme = value.split("://", 1)[0]
    import fsspec

    if scheme not in fsspec.available_protocols():
        raise InvalidInput(f"arrays_url {value!r:.80}: unknown scheme {scheme!r}; install its fsspec "
                           "implementation (s3fs for s3://, gcsfs for gs://)")
    return value.rstrip("/")


def open_root(location: str | Path, *, read_only: bool,
              storage_options: dict[str, Any] | None = None) -> zarr.storage.StoreLike:
    """Normalise what zarr accepts (a local path or a URL such as ``s3://bucket/prefix``).

    ``storage_options`` go to fsspec (e.g. ``{"endpoint_url": ...}``); without them an
    object store reads its endpoint and credentials from the environment
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...)."""
    text = str(location)
    if "://" in text and not text.startswith("file://"):
        return zarr.storage.FsspecStore.from_url(text, storage_options=storage_options, read_only=read_only)
    return zarr.storage.LocalStore(text.removeprefix("file://"), read_only=read_only)


def list_arrays(root: zarr.storage.StoreLike) -> list[str]:
    """Paths (``reps/NNNNNNNNN``) of every rep array found in the byte store, including
    half-written ones without metadata (verify's orphan scan)."""
    if isinstance(root, zarr.storage.LocalStore):
        base = Path(root.root) / "reps"
        return sorted(f"reps/{p.name}" for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    from zarr.core.sync import sync

    fs = getattr(root, "fs", None)
    if fs is not None and hasattr(fs, "invalidate_cache"):  # s3fs caches listings: other processes write too
        fs.invalidate_cache()

    async def names() -> list[str]:
        return [n async for n in root.list_dir("reps/")]  # type: ignore[union-attr]

    return sorted(f"reps/{n}" for n in sync(names()) if n != "zarr.json")


def array_exists(root: zarr.storage.StoreLike, path: str) -> bool:
    """Whether any file of the array at ``path`` is still in the byte store."""
    if isinstance(root, zarr.storage.LocalStore):
        return (Path(root.root) / path).exists()
    return path in list_arrays(root)


def rep_path(rep_id: int) -> str:
    """Array path of a rep: from its catalog id only."""
    return f"reps/{int(rep_id):09d}"


def layout(n_rows: int, dim: int, itemsize: int) -> tuple[int, int]:
    """(chunk_rows, shard_rows) for a rep: chunks of at most ~2 MiB holding a power-of-two
    number of rows (so the chunk boundaries of reps of different widths line up, and a
    query reading several reps block by block decodes every chunk exactly once), 32
    chunks a shard."""
    fit = max(1, CHUNK_BYTES // max(1, dim * itemsize))
    chunk_rows = 1 << (fit.bit_length() - 1)
    if chunk_rows >= n_rows:
        chunk_rows = max(1, n_rows)
    shard_rows = chunk_rows * CHUNKS_PER_SHARD
    if shard_rows > n_rows:  # a small rep: one shard, whole chunks
        shard_rows = -(-max(1, n_rows) // chunk_rows) * chunk_rows
    return chunk_rows, shard_rows


def create_array(root: zarr.storage.StoreLike, path: str, *, n_rows: int, dim: int, dtype: StoredDtype,
                 codec: str, chunk_rows: int, shard_rows: int) -> zarr.Array:
    arr = zarr.create_array(
        root, name=path, shape=(n_rows, dim), dtype=_NUMPY_STORAGE[dtype],
        chunks=(chunk_rows, dim), shards=(shard_rows, dim), compressors=_codec(codec),
        fill_value=0, overwrite=True, attributes={"actdb_dtype": dtype},
    )
    return arr


def open_array(root: zarr.storage.StoreLike, path: str) -> zarr.Array:
    try:
        return zarr.open_array(root, path=path, mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.ArrayNotFoundError) as exc:  # type: ignore[attr-defined]
        raise CorruptStore(f"array {path!r} is missing from the store ({exc})") from None
    except (ValueError, TypeError) as exc:  # unparsable zarr.json (JSONDecodeError is a ValueError)
        raise CorruptStore(f"array {path!r} has damaged metadata ({type(exc).__name__}: {exc}); "
                           "run `actdb verify --repair` to quarantine its rep") from None


def delete_array(root: zarr.storage.StoreLike, path: str) -> None:
    """Remove an array's files (no error when already gone)."""
    if isinstance(root, zarr.storage.LocalStore):
        import shutil

        shutil.rmtree(Path(root.root) / path, ignore_errors=True)
    else:  # an object store: remove every key under the prefix (metadata or not)
        from zarr.core.sync import sync

        sync(root.delete_dir(path))  # type: ignore[union-attr]


def to_storage(block: np.ndarray, dtype: StoredDtype) -> np.ndarray:
    """float rows -> the stored bit pattern (``bfloat16``: round-to-nearest-even to 16 bits)."""
    if dtype == "bfloat16":
        f32 = np.ascontiguousarray(block, dtype=np.float32).view(np.uint32)
        rounding = ((f32 >> 16) & 1) + np.uint32(0x7FFF)
        return ((f32 + rounding) >> 16).astype(np.uint16)
    return np.ascontiguousarray(block, dtype=_NUMPY_STORAGE[dtype])


def from_storage(block: np.ndarray, dtype: str) -> np.ndarray:
    """Stored bit pattern -> float32 (float16 stays float16 unless widened by the caller)."""
    if dtype == "bfloat16":
        return (block.astype(np.uint32) << 16).view(np.float32)
    return block


@dataclass
class RowStats:
    """Streaming checksum and summary statistics over rows in stored form."""

    dtype: str
    hasher: Any = field(default_factory=lambda: hashlib.blake2b(digest_size=16))
    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    vmin: float = float("inf")
    vmax: float = float("-inf")
    nonfinite: int = 0

    def update(self, stored: np.ndarray) -> None:
        self.hasher.update(np.ascontiguousarray(stored).tobytes())
        values = from_storage(stored, self.dtype).astype(np.float64, copy=False)
        finite = np.isfinite(values)
        if not finite.all():
            self.nonfinite += int((~finite).sum())
            values = values[finite]
        if values.size:
            self.count += values.size
            self.total += float(values.sum())
            self.total_sq += float(np.einsum("i,i->", values.ravel(), values.ravel()))
            self.vmin = min(self.vmin, float(values.min()))
            self.vmax = max(self.vmax, float(values.max()))

    @property
    def checksum(self) -> str:
        return "blake2b:" + self.hasher.hexdigest()

    def summary(self) -> dict[str, float | None]:
        if self.count == 0:
            return {"stat_mean": None, "stat_std": None, "stat_min": None, "stat_max": None, "stat_absmax": None}
        mean = self.total / self.count
        var = max(self.total_sq / self.count - mean * mean, 0.0)
        return {
            "stat_mean": mean, "stat_std": var ** 0.5, "stat_min": self.vmin, "stat_max": self.vmax,
            "stat_absmax": max(abs(self.vmin), abs(self.vmax)),
        }


class RepArray:
    """A lazy, read-only handle on one stored rep: nothing is read until indexed.

    ``handle[a:b]`` reads only the chunks covering rows a..b and returns them decoded
    ``(b - a, dim)`` in the stored precision (float16 stays float16, no copy; bfloat16
    is widened to float32); :meth:`iter_blocks` streams the whole rep in
    shard-sized blocks. ``reads`` counts decoded row blocks (tests use it to prove
    laziness).
    """

    def __init__(self, root: zarr.storage.StoreLike, path: str, *, rep_id: int, n_rows: int, dim: int,
                 dtype: str, chunk_rows: int, shard_rows: int):
        self._root = root
        self.path = path
        self.rep_id = rep_id
        self.shape = (n_rows, dim)
        self.dtype = dtype
        self.chunk_rows = chunk_rows
        self.shard_rows = shard_rows
        self._array: zarr.Array | None = None
        self.reads = 0
        self.chunks_read = 0

    def __repr__(self) -> str:
        return f"RepArray(rep_id={self.rep_id}, shape={self.shape}, dtype={self.dtype})"

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def value_dtype(self) -> np.dtype:
        """The NumPy dtype reads return (``float16`` or ``float32``)."""
        return np.dtype(np.float16) if self.dtype == "float16" else np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * _NUMPY_STORAGE[self.dtype].itemsize

    def _zarr(self) -> zarr.Array:
        if self._array is None:
            arr = open_array(self._root, self.path)
            if arr.shape != self.shape:
                raise CorruptStore(f"rep {self.rep_id}: array shape {arr.shape} != catalog shape {self.shape}")
            self._array = arr
        return self._array

    def read_stored(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in their stored bit pattern."""
        start, stop = max(0, start), min(stop, self.shape[0])
        self.reads += 1
        if stop > start:
            self.chunks_read += (stop - 1) // self.chunk_rows - start // self.chunk_rows + 1
        array = self._zarr()
        try:
            return array[start:stop]
        except (ValueError, OSError, RuntimeError) as exc:  # a shard that fails its crc32c, truncated, ...
            raise CorruptStore(f"rep {self.rep_id}: rows {start}:{stop} of {self.path!r} cannot be decoded "
                               f"({type(exc).__name__}: {exc}); run `actdb verify --repair`") from None

    def __getitem__(self, key: slice | int) -> np.ndarray:
        if isinstance(key, int):
            idx = key + self.shape[0] if key < 0 else key
            if not 0 <= idx < self.shape[0]:
                raise IndexError(f"row {key} out of range for a rep of {self.shape[0]} rows")
            return self[idx: idx + 1][0]
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise InvalidInput("a rep is indexed by a row slice (rep[a:b]) or a row number")
        start, stop, _ = key.indices(self.shape[0])
        return from_storage(self.read_stored(start, stop), self.dtype)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Rows at sorted or unsorted integer positions (reads only the chunks touched)."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), self.shape[1]), dtype=self.value_dtype)
        order = np.argsort(index, kind="stable")
        sorted_idx = index[order]
        chunk_of = sorted_idx // self.chunk_rows
        for c in np.unique(chunk_of):
            sel = chunk_of == c
            block = self[int(c) * self.chunk_rows: (int(c) + 1) * self.chunk_rows]
            out[order[sel]] = block[sorted_idx[sel] - int(c) * self.chunk_rows]
        return out

    def iter_blocks(self, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, rows)`` blocks in order, rows ``(k, dim)`` as :attr:`value_dtype`."""
        step = block_rows or self.shard_rows
        for start in range(0, self.shape[0], step):
            yield start, self[start: start + step]

    def to_numpy(self) -> np.ndarray:
        return self[0: self.shape[0]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.to_numpy()
        return out if dtype is None else out.astype(dtype)
