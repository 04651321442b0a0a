"""Rep arrays on Zarr v3: layout, codecs, the lazy read handle (with its own reader for local
shards), checksums.

One array per rep, shape ``(n_rows, dim)``, chunked along rows only (chunks of about
2 MiB) and sharded (about 32 chunks, 64 MiB, per shard file), so a rep of a million
rows is a handful of files. Paths come from catalog ids (:func:`rep_path`), never from
user-supplied names. ``bfloat16`` has no NumPy dtype: it is stored as its raw 16 bits
(``uint16``) with the attribute ``actdb_dtype = "bfloat16"`` and widened on read.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import BloscCodec, ZstdCodec

from actdb.errors import CorruptStore, InvalidInput
from actdb.store.checksums import CRC_ATTR, REP_ATTR, check_chunk, parse_checksums

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


REP_PATH = re.compile(r"reps/[0-9]{9}")


def moments_path(row_id: int) -> str:
    """Zarr group of one cached per-rep moments row (``rep_moments.id``): from the id only."""
    return f"moments/{int(row_id):09d}"


MOMENTS_PATH = re.compile(r"moments/[0-9]{9}")


def checked_path(rep_id: int, stored: str) -> str:
    """The array path of rep ``rep_id``, after checking the catalog's ``path`` column agrees.

    Array locations are derived from ids; a catalog row pointing anywhere else (``../victim``,
    an absolute path, another rep's folder) is corruption, reported and never followed."""
    path = rep_path(rep_id)
    if stored != path:
        raise CorruptStore(f"the catalog row of rep {rep_id} points its array at {stored!r:.200}, not {path!r}; "
                           "actdb never follows such a path. The catalog was edited or damaged: run "
                           "`actdb verify` (and restore the catalog from a backup)")
    return path


def _safe_path(path: str) -> str:
    """Refuse any array path but the ``reps/NNNNNNNNN`` and ``moments/NNNNNNNNN`` forms actdb
    creates (defence in depth for every delete: nothing outside the array root, no nested or
    hidden names)."""
    if not isinstance(path, str) or not (REP_PATH.fullmatch(path) or MOMENTS_PATH.fullmatch(path)):
        raise CorruptStore(f"refusing to touch array path {path!r:.200}: actdb only creates 'reps/NNNNNNNNN' "
                           "and 'moments/NNNNNNNNN'")
    return path


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


def create_array(root: zarr.storage.StoreLike, rep_id: int, *, n_rows: int, dim: int, dtype: StoredDtype,
                 codec: str, chunk_rows: int, shard_rows: int) -> zarr.Array:
    """A new, empty array for rep ``rep_id`` at its id-derived path; it records its owner."""
    arr = zarr.create_array(
        root, name=rep_path(rep_id), shape=(n_rows, dim), dtype=_NUMPY_STORAGE[dtype],
        chunks=(chunk_rows, dim), shards=(shard_rows, dim), compressors=_codec(codec),
        fill_value=0, overwrite=True, attributes={"actdb_dtype": dtype, REP_ATTR: int(rep_id)},
    )
    return arr


def seal(array: zarr.Array, chunk_checksums: list[int], *, underflow: int | None = None) -> None:
    """Record the per-chunk checksums of a fully written array (see :mod:`actdb.store.checksums`)
    and, when known, how many non-zero values were stored as zero (``actdb_n_underflow``)."""
    attrs: dict[str, Any] = {CRC_ATTR: [int(v) for v in chunk_checksums]}
    if underflow is not None:
        attrs["actdb_n_underflow"] = int(underflow)
    array.attrs.update(attrs)


def _codec_key(codec: Any) -> tuple[str, Any, Any]:
    def plain(value: Any) -> Any:
        return getattr(value, "value", value)

    return type(codec).__name__, plain(getattr(codec, "cname", None)), plain(getattr(codec, "shuffle", None))


def codec_name(array: zarr.Array) -> str | None:
    """Which of :data:`CODECS` an array's compressor chain is, or None for any other chain."""
    found = [_codec_key(c) for c in (array.compressors or ())]
    for name in CODECS:
        if found == [_codec_key(c) for c in (_codec(name) or ())]:
            return name
    return None


def check_metadata(array: zarr.Array, *, rep_id: int, n_rows: int, dim: int, dtype: str, chunk_rows: int,
                   shard_rows: int, codec: str | None = None) -> None:
    """Raise CorruptStore unless the array's metadata is what the catalog says was written:
    shape, stored dtype (and its ``actdb_dtype`` attribute), chunk and shard shape, a codec
    chain actdb writes (the catalog's own, when ``codec`` is given), its owner."""
    where = f"rep {rep_id}"
    found: list[str] = []
    if tuple(array.shape) != (n_rows, dim):
        found.append(f"shape {tuple(array.shape)} != catalog ({n_rows}, {dim})")
    storage = _NUMPY_STORAGE.get(dtype)
    if storage is None or np.dtype(array.dtype) != storage or array.attrs.get("actdb_dtype") != dtype:
        found.append(f"data type {np.dtype(array.dtype).name} (actdb_dtype {array.attrs.get('actdb_dtype')!r}) "
                     f"!= catalog {dtype!r}")
    if tuple(array.chunks) != (chunk_rows, dim) or tuple(array.shards or ()) != (shard_rows, dim):
        found.append(f"chunks {tuple(array.chunks)} / shards {array.shards} != catalog ({chunk_rows}, {dim}) / "
                     f"({shard_rows}, {dim})")
    name = codec_name(array)
    if name is None or (codec is not None and name != codec):
        found.append(f"codec chain {[type(c).__name__ for c in (array.compressors or ())]} != catalog "
                     f"{codec or 'one of ' + ', '.join(CODECS)!r}")
    owner = array.attrs.get(REP_ATTR)
    if owner is not None and owner != rep_id:
        found.append(f"the array belongs to rep {owner!r}")
    if found:
        raise CorruptStore(f"{where}: its array's metadata does not match the catalog ({'; '.join(found)}): "
                           "zarr.json was edited or replaced. Run `actdb verify --repair` to quarantine the rep")


def open_array(root: zarr.storage.StoreLike, path: str) -> zarr.Array:
    try:
        return zarr.open_array(root, path=path, mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.ArrayNotFoundError) as exc:  # type: ignore[attr-defined]
        raise CorruptStore(f"array {path!r} is missing from the store ({exc})") from None
    except (ValueError, TypeError) as exc:  # unparsable zarr.json (JSONDecodeError is a ValueError)
        raise CorruptStore(f"array {path!r} has damaged metadata ({type(exc).__name__}: {exc}); "
                           "run `actdb verify --repair` to quarantine its rep") from None


def delete_array(root: zarr.storage.StoreLike, path: str) -> None:
    """Remove an array's (or a moments group's) files (no error when already gone); only
    ``reps/NNNNNNNNN`` and ``moments/NNNNNNNNN`` paths."""
    path = _safe_path(path)
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


_HASH_THREAD_BYTES = 1 << 20  # blocks from 1 MiB are hashed on a second thread
_STATS_BLOCK_VALUES = 1 << 17  # values widened to float64 at a time (1 MiB)


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
        """Add rows ``(k, dim)`` in stored form. A big block is hashed on a second thread
        (blake2b releases the GIL) while the statistics run here, in float64, a block of
        rows at a time so the widened copy stays in cache (measured: about 3x faster than
        hashing a copy, then widening the whole block). The checksum is the same either way."""
        data = np.ascontiguousarray(stored)
        raw = memoryview(data.reshape(-1)).cast("B")
        hashing = in_background(self.hasher.update, raw) if raw.nbytes >= _HASH_THREAD_BYTES else None
        if hashing is None:
            self.hasher.update(raw)
        try:
            step = max(1, _STATS_BLOCK_VALUES // max(1, data.shape[-1] if data.ndim > 1 else 1))
            for start in range(0, len(data), step):
                self._add(from_storage(data[start: start + step], self.dtype).astype(np.float64).ravel())
        finally:
            if hashing is not None:
                hashing.result()

    def _add(self, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        if not finite.all():
            self.nonfinite += int((~finite).sum())
            values = values[finite]
        if values.size:
            self.count += values.size
            self.total += float(values.sum())
            self.total_sq += float(np.dot(values, values))
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


# ------------------------------------------------------------------ fast local reads
_MAX_U64 = 2**64 - 1
_BLOSC_HEADER = 16
_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None
_scratch = threading.local()
FAST_LOCAL_READS = True  # tests switch it off to compare with zarr's own reads


def read_threads() -> int:
    """Threads that read and decode chunks: one per core, at least 2 (reads overlap decodes)."""
    return max(2, min(8, os.cpu_count() or 1))


def _read_pool() -> ThreadPoolExecutor:
    """The shared chunk-decoding threads, created on first use (a forked child makes its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            if _pool is None:
                os.register_at_fork(after_in_child=_forget_pool)
            _pool = (os.getpid(), ThreadPoolExecutor(read_threads(), thread_name_prefix="actdb-read"))
        return _pool[1]


def _forget_pool() -> None:
    """In a forked child: the parent's threads (and any lock they held) do not exist here."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


def in_background(fn: Any, *args: Any) -> Future[Any]:
    """Run ``fn(*args)`` on a fresh thread; ``.result()`` waits and re-raises its error."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            future.set_exception(exc)

    threading.Thread(target=run, name="actdb-background", daemon=True).start()
    return future


def _scratch_bytes(name: str, nbytes: int) -> memoryview:
    """A per-thread reusable buffer of ``nbytes`` (no allocation, no page faults per chunk)."""
    buf = getattr(_scratch, name, None)
    if buf is None or len(buf) < nbytes:
        buf = bytearray(nbytes)
        setattr(_scratch, name, buf)
    return memoryview(buf)[:nbytes]


def _endian_ok(codec: Any) -> bool:
    endian = getattr(codec, "endian", None)
    return getattr(endian, "value", endian) in (None, "little")


class LocalShards:
    """Reads rows of a rep's sharded array in a local folder, chunk by chunk, into the caller's buffer.

    Zarr (3.1) decodes every inner chunk into a new buffer, copies it into a new shard-sized
    buffer and copies that into the result, all the copies on its one event-loop thread
    (profiled reading a 1 GiB rep: those two copies were 56% of that thread's samples, the
    decoding threads mostly idle, and the whole read ~0.3-1 GB/s on 2 cores). Here each chunk is
    read with ``preadv`` into a per-thread buffer and decompressed by blosc straight into its
    rows of the result, by a small thread pool (both calls release the GIL): one pass over
    the file bytes, one over the result.

    Only the layout :func:`create_array` writes is handled: 2-D, one ``sharding_indexed``
    codec with its index at the end (``bytes`` + ``crc32c``), inner chunks ``bytes``
    (little-endian) and at most one ``blosc`` codec, no transpose. :meth:`for_array` returns
    None for anything else (an object store, zstd, another writer's array) and the handle
    reads through zarr. Checks as zarr's: the shard index must pass its crc32c, chunk extents
    must lie inside the file, a blosc header must announce exactly one chunk; a missing shard
    or chunk holds the fill value (zarr does not store chunks of fill values). A complete rep
    is immutable, so shard indexes are cached per handle.
    """

    def __init__(self, folder: Path, keys: Any, *, n_rows: int, dim: int, dtype: np.dtype, shard_rows: int,
                 chunk_rows: int, blosc: bool, fill_value: Any, rep_id: int = 0,
                 checksums: np.ndarray | None = None):
        self.folder = folder
        self.rep_id = rep_id
        self.checksums = checksums
        self._key = keys
        self.n_rows, self.dim, self.dtype = n_rows, dim, dtype
        self.shard_rows, self.chunk_rows = shard_rows, chunk_rows
        self.chunks_per_shard = shard_rows // chunk_rows
        self.chunk_nbytes = chunk_rows * dim * dtype.itemsize
        self.blosc = blosc
        self.fill_value = fill_value
        self._index: dict[int, tuple[np.ndarray, int]] = {}

    @classmethod
    def for_array(cls, root: zarr.storage.StoreLike, path: str, array: zarr.Array, *, rep_id: int = 0,
                  checksums: np.ndarray | None = None) -> LocalShards | None:
        """A reader for ``array`` when its layout is the one actdb writes, else None."""
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

        if not FAST_LOCAL_READS or not isinstance(root, zarr.storage.LocalStore) or sys.byteorder != "little":
            return None
        meta = array.metadata
        codecs: tuple[Any, ...] = tuple(getattr(meta, "codecs", ()))
        if getattr(meta, "zarr_format", None) != 3 or len(array.shape) != 2 or len(codecs) != 1:
            return None
        shard = codecs[0]
        if not isinstance(shard, ShardingCodec) or getattr(shard.index_location, "value", None) != "end":
            return None
        index_codecs, inner = list(shard.index_codecs), list(shard.codecs)
        if [type(c) for c in index_codecs] != [BytesCodec, Crc32cCodec] or not _endian_ok(index_codecs[0]):
            return None
        if not inner or type(inner[0]) is not BytesCodec or not _endian_ok(inner[0]) or len(inner) > 2 \
                or (len(inner) == 2 and type(inner[1]) is not BloscCodec):
            return None
        shard_shape = tuple(getattr(meta.chunk_grid, "chunk_shape", ()))
        chunk_shape = tuple(shard.chunk_shape)
        n_rows, dim = array.shape
        dtype = np.dtype(array.dtype)
        if len(shard_shape) != 2 or len(chunk_shape) != 2 or shard_shape[1] != dim or chunk_shape[1] != dim \
                or chunk_shape[0] < 1 or shard_shape[0] % chunk_shape[0] or dtype.hasobject or dim < 1:
            return None
        return cls(Path(root.root) / path, meta.encode_chunk_key, n_rows=n_rows, dim=dim, dtype=dtype,
                   shard_rows=shard_shape[0], chunk_rows=chunk_shape[0], blosc=len(inner) == 2,
                   fill_value=meta.fill_value, rep_id=rep_id, checksums=checksums)

    def read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows ``start:stop`` (``0 <= start < stop <= n_rows``) into ``out`` ``(stop - start, dim)``.

        Raises ValueError naming the shard for damaged data (the caller turns it into CorruptStore)."""
        cr, cps = self.chunk_rows, self.chunks_per_shard
        first, last = start // cr, (stop - 1) // cr
        jobs: list[tuple[int, int, int, np.ndarray, int, int, int]] = []
        fds: list[int] = []
        try:
            for s in range(first // cps, last // cps + 1):
                c0, c1 = max(first, s * cps), min(last, s * cps + cps - 1)
                try:
                    fd = os.open(self.folder / self._key((s, 0)), os.O_RDONLY)
                except FileNotFoundError:  # a shard of fill values only is not stored
                    out[max(start, c0 * cr) - start: min(stop, (c1 + 1) * cr) - start] = self.fill_value
                    for c in range(c0, c1 + 1):
                        self._check_fill(c)
                    continue
                fds.append(fd)
                index, end = self._shard_index(s, fd)
                for c in range(c0, c1 + 1):
                    r0, r1 = max(start, c * cr), min(stop, c * cr + cr)
                    offset, nbytes = (int(v) for v in index[c - s * cps])
                    dest = out[r0 - start: r1 - start]
                    if offset == _MAX_U64 and nbytes == _MAX_U64:
                        dest[...] = self.fill_value
                        self._check_fill(c)
                    elif offset + nbytes > end:
                        raise ValueError(f"shard {self._key((s, 0))}: chunk {c - s * cps} lies at bytes "
                                         f"{offset}..{offset + nbytes}, beyond the {end} bytes of data before "
                                         "its index (a truncated or damaged shard)")
                    else:
                        jobs.append((fd, offset, nbytes, dest, r0 - c * cr, r1 - c * cr, c))
            self._run(jobs)
        finally:
            for fd in fds:
                os.close(fd)

    def _run(self, jobs: list[tuple[int, int, int, np.ndarray, int, int, int]]) -> None:
        if len(jobs) <= 1:  # one chunk: no hand-off to the pool
            for job in jobs:
                self._decode(*job)
            return
        futures: list[Future[None]] = [_read_pool().submit(self._decode, *job) for job in jobs]
        errors = [f.exception() for f in futures]  # wait for every job: the files close after this
        for exc in errors:
            if exc is not None:
                raise exc

    def _shard_index(self, s: int, fd: int) -> tuple[np.ndarray, int]:
        """(offset, nbytes) of each chunk of shard ``s``, and where its data ends."""
        hit = self._index.get(s)
        if hit is not None:
            return hit
        import google_crc32c  # zarr's own crc32c implementation

        size = os.fstat(fd).st_size
        nbytes = 16 * self.chunks_per_shard + 4
        raw = os.pread(fd, nbytes, size - nbytes) if size >= nbytes else b""
        if len(raw) != nbytes or google_crc32c.value(raw[:-4]).to_bytes(4, "little") != raw[-4:]:
            raise ValueError(f"shard {self._key((s, 0))} ({size} bytes): its index fails its crc32c check "
                             "(a truncated or damaged shard)")
        entry = (np.frombuffer(raw[:-4], "<u8").reshape(self.chunks_per_shard, 2), size - nbytes)
        self._index[s] = entry
        return entry

    def _valid_rows(self, chunk: int) -> int:
        """Rows of chunk ``chunk`` inside the array (the last chunk may be short)."""
        return min(self.chunk_rows, self.n_rows - chunk * self.chunk_rows)

    def _check_fill(self, chunk: int) -> None:
        """A chunk that is not stored reads as the fill value: right only if it was written so."""
        if self.checksums is not None:
            rows = np.full((self._valid_rows(chunk), self.dim), self.fill_value, dtype=self.dtype)
            check_chunk(self.checksums, chunk, rows, rep_id=self.rep_id, chunk_rows=self.chunk_rows)

    def _decode(self, fd: int, offset: int, nbytes: int, dest: np.ndarray, lo: int, hi: int, chunk: int) -> None:
        """One stored chunk into ``dest`` (its rows ``lo:hi``), checked against its checksum."""
        whole = lo == 0 and hi == self.chunk_rows
        valid = self._valid_rows(chunk)
        check = self.checksums
        if not self.blosc and nbytes != self.chunk_nbytes:
            raise ValueError(f"a chunk of {nbytes} bytes where {self.chunk_nbytes} were expected")
        if not self.blosc and whole:
            got = os.preadv(fd, [dest.reshape(-1).view(np.uint8).data], offset)
        else:
            buf = _scratch_bytes("file", nbytes)
            got = os.preadv(fd, [buf], offset)
        if got != nbytes:
            raise ValueError(f"read {got} of a chunk's {nbytes} bytes (a truncated shard)")
        if not self.blosc:
            if whole:
                check_chunk(check, chunk, dest, rep_id=self.rep_id, chunk_rows=self.chunk_rows)
            else:
                rows = np.frombuffer(buf, self.dtype).reshape(self.chunk_rows, self.dim)
                check_chunk(check, chunk, rows[:valid], rep_id=self.rep_id, chunk_rows=self.chunk_rows)
                dest[...] = rows[lo:hi]
            return
        header = bytes(buf[:_BLOSC_HEADER])
        size = int.from_bytes(header[4:8], "little") if len(header) == _BLOSC_HEADER else -1
        if size != self.chunk_nbytes or int.from_bytes(header[12:16], "little") != nbytes:
            raise ValueError(f"a blosc chunk header announces {size} bytes in {nbytes}, not one chunk of "
                             f"{self.chunk_nbytes} bytes (a damaged shard)")
        from numcodecs import blosc

        if whole:
            blosc.decompress(buf, dest)
            check_chunk(check, chunk, dest, rep_id=self.rep_id, chunk_rows=self.chunk_rows)
        else:
            decoded = np.frombuffer(_scratch_bytes("chunk", self.chunk_nbytes), self.dtype)
            blosc.decompress(buf, decoded)
            rows = decoded.reshape(self.chunk_rows, self.dim)
            check_chunk(check, chunk, rows[:valid], rep_id=self.rep_id, chunk_rows=self.chunk_rows)
            dest[...] = rows[lo:hi]


class RepArray:
    """A lazy, read-only handle on one stored rep: nothing is read until indexed.

    ``handle[a:b]`` reads only the chunks covering rows a..b and returns them decoded
    ``(b - a, dim)`` in the stored precision (float16 stays float16, no copy; bfloat16
    is widened to float32); :meth:`iter_blocks` streams the whole rep in
    shard-sized blocks. ``reads`` counts decoded row blocks (tests use it to prove
    laziness). A rep on local disk is read by :class:`LocalShards` (chunks decoded in
    parallel straight into the returned block), anything else through zarr.
    """

    def __init__(self, root: zarr.storage.StoreLike, path: str, *, rep_id: int, n_rows: int, dim: int,
                 dtype: str, chunk_rows: int, shard_rows: int, codec: str | None = None):
        self._root = root
        self.path = checked_path(rep_id, path)
        self.codec = codec
        self._checksums: np.ndarray | None = None
        self.rep_id = rep_id
        self.shape = (n_rows, dim)
        self.dtype = dtype
        self.chunk_rows = chunk_rows
        self.shard_rows = shard_rows
        self._array: zarr.Array | None = None
        self._local: LocalShards | None = None
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
        """The zarr array, opened once: its metadata checked against the catalog record and its
        per-chunk checksums loaded (None for an array written before they existed)."""
        if self._array is None:
            arr = open_array(self._root, self.path)
            check_metadata(arr, rep_id=self.rep_id, n_rows=self.shape[0], dim=self.shape[1], dtype=self.dtype,
                           chunk_rows=self.chunk_rows, shard_rows=self.shard_rows, codec=self.codec)
            n_chunks = -(-self.shape[0] // self.chunk_rows)
            self._checksums = parse_checksums(arr.attrs, rep_id=self.rep_id, n_chunks=n_chunks,
                                              where=f"array {self.path!r}")
            self._local = LocalShards.for_array(self._root, self.path, arr, rep_id=self.rep_id,
                                                checksums=self._checksums)
            self._array = arr
        return self._array

    @property
    def has_checksums(self) -> bool:
        """Whether reads of this rep are verified chunk by chunk (arrays written since checksums)."""
        self._zarr()
        return self._checksums is not None

    def read_stored(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in their stored bit pattern."""
        start, stop = max(0, start), min(stop, self.shape[0])
        self.reads += 1
        if stop > start:
            self.chunks_read += (stop - 1) // self.chunk_rows - start // self.chunk_rows + 1
        array = self._zarr()
        try:
            if self._local is None:
                return self._read_zarr(array, start, stop)
            out = np.empty((max(0, stop - start), self.shape[1]), dtype=self._local.dtype)
            if stop > start:
                self._local.read_into(start, stop, out)
            return out
        except CorruptStore:
            raise
        except (ValueError, OSError, RuntimeError) as exc:  # a shard that fails its crc32c, truncated, ...
            raise CorruptStore(f"rep {self.rep_id}: rows {start}:{stop} of {self.path!r} cannot be decoded "
                               f"({type(exc).__name__}: {exc}); run `actdb verify --repair`") from None

    def _read_zarr(self, array: zarr.Array, start: int, stop: int) -> np.ndarray:
        """Rows through zarr; with checksums, whole chunks are read (zarr decodes them anyway) and
        each is verified before the requested rows are cut out."""
        if self._checksums is None or stop <= start:
            return array[start:stop]
        cr = self.chunk_rows
        lo, hi = start // cr * cr, min(self.shape[0], -(-stop // cr) * cr)
        block = array[lo:hi]
        for c in range(lo // cr, -(-hi // cr)):
            check_chunk(self._checksums, c, block[c * cr - lo: (c + 1) * cr - lo], rep_id=self.rep_id, chunk_rows=cr)
        return block[start - lo: stop - lo]

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
