"""actdb's own read path for local sharded arrays (``shards.LocalShards``): the same values as
zarr's reads (``readers.ZarrRows``, injected into a second handle) for every layout actdb writes,
zarr's reads for anything else, fill values where zarr stores nothing, typed errors for damaged
shards, and safe under threads and fork."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from actdb.errors import CorruptStore
from actdb.store import arrays as A
from actdb.store.readers import OpenedArray, OpenReader, RowReader, ZarrRows
from actdb.store.shards import LocalShards


def make(tmp_path: Path, x: np.ndarray, *, codec: str = "lz4", dtype: str = "float16", chunk_rows: int = 16,
         chunks_per_shard: int = 4, name: str = "reps/000000001",
         reader: OpenReader = A.choose_reader) -> A.RepArray:
    """``x`` stored as actdb stores a rep, and a fresh handle on it."""
    root = A.open_root(str(tmp_path / "arrays"), read_only=False)
    n, d = x.shape
    shard_rows = chunk_rows * chunks_per_shard
    arr = A.create_array(root, int(name.rsplit("/", 1)[1]), n_rows=n, dim=d, dtype=dtype, codec=codec,  # type: ignore[arg-type]
                         chunk_rows=chunk_rows, shard_rows=shard_rows)
    arr[:] = A.to_storage(x, dtype)  # type: ignore[arg-type]
    return handle(tmp_path, x.shape, dtype=dtype, chunk_rows=chunk_rows, shard_rows=shard_rows, name=name,
                  reader=reader)


def handle(tmp_path: Path, shape: tuple[int, int], *, dtype: str = "float16", chunk_rows: int = 16,
           shard_rows: int = 64, name: str = "reps/000000001", reader: OpenReader = A.choose_reader) -> A.RepArray:
    root = A.open_root(str(tmp_path / "arrays"), read_only=True)
    return A.RepArray(root, name, rep_id=1, n_rows=shape[0], dim=shape[1], dtype=dtype,
                      chunk_rows=chunk_rows, shard_rows=shard_rows, reader=reader)


def recording(built: list[RowReader]) -> OpenReader:
    """The default reader choice, remembering each reader it builds."""
    def open_reader(opened: OpenedArray) -> RowReader:
        built.append(A.choose_reader(opened))
        return built[-1]
    return open_reader


def via_zarr(h: A.RepArray) -> A.RepArray:
    """A second handle on the same array that reads through zarr only."""
    return h.with_reader(ZarrRows)


def shard_file(tmp_path: Path, shard: int, name: str = "reps/000000001") -> Path:
    return tmp_path / "arrays" / name / "c" / str(shard) / "0"


@pytest.mark.parametrize("codec", A.CODECS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
def test_same_values_as_zarr_for_every_slice(tmp_path, codec, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((203, 7)) * 3).astype(np.float32)  # 203: a partial last chunk and shard
    built: list[RowReader] = []
    h = make(tmp_path, x, codec=codec, dtype=dtype, reader=recording(built))
    assert not h.has_checksums and len(built) == 1  # opening builds the reader (make() seals no checksums)
    assert isinstance(built[0], LocalShards) == (codec != "zstd")  # zstd (not blosc) is read by zarr
    assert isinstance(built[0], ZarrRows) == (codec == "zstd")
    ref = via_zarr(h)
    cuts = [(0, 203), (0, 1), (202, 203), (15, 17), (16, 32), (63, 65), (60, 200), (5, 5), (190, 400), (-3, 2)]
    cuts += [(300, 400), (9, 3)]
    cuts += [tuple(sorted(rng.integers(0, 210, 2))) for _ in range(20)]
    for a, b in cuts:
        got, want = h.read_stored(a, b), ref.read_stored(a, b)
        assert got.dtype == want.dtype and got.shape == want.shape, (a, b)
        np.testing.assert_array_equal(got, want, err_msg=f"rows {a}:{b}")
    expect = A.from_storage(A.to_storage(x, dtype), dtype)  # type: ignore[arg-type]
    np.testing.assert_array_equal(np.concatenate([b for _, b in h.iter_blocks(48)]), expect)
    np.testing.assert_array_equal(h.rows(np.array([202, 0, 64, 63, 17])), expect[[202, 0, 64, 63, 17]])


def test_counters_and_laziness_unchanged(tmp_path):
    x = np.arange(200 * 3, dtype=np.float32).reshape(200, 3)
    built: list[RowReader] = []
    h = make(tmp_path, x, reader=recording(built))
    assert h.reads == 0 and built == []  # nothing opened yet
    np.testing.assert_array_equal(h[20:40], x[20:40])
    np.testing.assert_array_equal(h[40:60], x[40:60])
    assert h.reads == 2 and h.chunks_read == 4 and len(built) == 1  # opened once
    assert isinstance(built[0], LocalShards)


def test_unstored_chunks_and_shards_hold_the_fill_value(tmp_path):
    x = np.ones((256, 4), np.float32)
    x[16:32] = 0  # one chunk of fill values: zarr stores no bytes for it
    x[64:128] = 0  # a whole shard of fill values: no shard file at all
    h = make(tmp_path, x)
    assert not shard_file(tmp_path, 1).exists() and shard_file(tmp_path, 0).exists()
    np.testing.assert_array_equal(h.to_numpy(), x.astype(np.float16))
    np.testing.assert_array_equal(h[10:140], via_zarr(h)[10:140])
    shard_file(tmp_path, 2).unlink()  # a deleted shard reads as fill values, as with zarr (verify's checksum finds it)
    fresh = handle(tmp_path, x.shape)
    np.testing.assert_array_equal(fresh[100:250], via_zarr(fresh)[100:250])
    assert not fresh[128:192].any()


def _damage_truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


def _damage_index(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # inside the chunk index, before its crc32c
    path.write_bytes(bytes(data))


def _damage_blosc_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[4:8], "little")  # the first chunk's blosc header: its uncompressed size,
    data[4:8] = (size // 2).to_bytes(4, "little")  # halved (blosc would fill half the rows and say nothing)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_index, _damage_blosc_header])
def test_damaged_shards_are_typed_errors(tmp_path, damage):
    x = np.random.default_rng(1).standard_normal((256, 8)).astype(np.float32)
    make(tmp_path, x)
    damage(shard_file(tmp_path, 1))
    h = handle(tmp_path, x.shape)
    np.testing.assert_array_equal(h[0:64], x[0:64].astype(np.float16))  # other shards still read
    with pytest.raises(CorruptStore, match=r"rep 1: rows 60:70 of 'reps/000000001' cannot be decoded .*verify"):
        h[60:70]
    with pytest.raises(CorruptStore, match="rep 1"):
        h.to_numpy()


def test_chunk_extents_beyond_the_data_are_refused(tmp_path):
    import google_crc32c

    x = np.random.default_rng(2).standard_normal((64, 8)).astype(np.float32)
    make(tmp_path, x)
    path = shard_file(tmp_path, 0)
    data = bytearray(path.read_bytes())
    index = np.frombuffer(bytes(data[-(16 * 4 + 4):-4]), "<u8").reshape(4, 2).copy()
    index[2, 1] += 10_000  # a chunk longer than the file, with a valid crc32c
    raw = index.tobytes()
    data[-(16 * 4 + 4):] = raw + google_crc32c.value(raw).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    h = handle(tmp_path, x.shape)
    np.testing.assert_array_equal(h[0:32], x[0:32].astype(np.float16))
    with pytest.raises(CorruptStore, match="beyond the"):
        h[32:48]


def test_concurrent_readers_share_a_handle(tmp_path):
    x = np.random.default_rng(3).standard_normal((1000, 16)).astype(np.float16)
    h = make(tmp_path, x)
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(30):
            a, b = sorted(rng.integers(0, 1000, 2))
            if not np.array_equal(h[a:b], x[a:b]):
                errors.append(f"rows {a}:{b}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _read_in_child(path: str, shape: tuple[int, int], queue: multiprocessing.Queue) -> None:
    h = handle(Path(path), shape)
    queue.put(float(h.to_numpy().astype(np.float64).sum()))


def test_a_forked_child_reads_with_its_own_threads(tmp_path):
    x = np.random.default_rng(4).standard_normal((1000, 16)).astype(np.float16)
    h = make(tmp_path, x)
    h.to_numpy()  # the parent's read threads exist now; a forked child inherits none of them
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(str(tmp_path), x.shape, queue))
    child.start()
    child.join(60)
    assert child.exitcode == 0, "the child hung or failed reading"
    assert queue.get(timeout=5) == pytest.approx(float(x.astype(np.float64).sum()))
