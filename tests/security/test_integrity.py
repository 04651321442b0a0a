"""Integrity holes of a store handed over by someone else (or damaged on disk):

- ``verify --repair`` never follows a catalog ``path`` outside the store's array root;
- a flipped byte, another rep's shard copied in, a deleted shard, a ``zarr.json`` whose
  data type was edited: an error on the next read of that chunk, and ``verify`` reports it;
- arrays written before per-chunk checksums are sealed by ``verify --repair``;
- float16 underflow is counted and warned about.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from security_kit import raises_actdb

import actdb
from actdb.errors import CorruptStore, UnderflowWarning
from actdb.store import arrays
from actdb.store import schema as S
from actdb.store.checksums import CRC_ATTR
from actdb.store.readers import OpenedArray, RowReader, ZarrRows
from actdb.store.shards import LocalShards

N = 1000  # with 512-byte chunks: 16 rows of width 8 (float32) a chunk, 512 a shard, two shard files a rep


def _set_path(db: actdb.Database, rep_id: int, path: str, status: str | None = None) -> None:
    values: dict[str, object] = {"path": path}
    if status is not None:
        values["status"] = status
    with db.catalog.connect(write=True) as conn:
        conn.execute(S.rep.update().where(S.rep.c.id == rep_id).values(**values))


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 512)


@pytest.fixture
def three_reps(tmp_path, small_chunks):
    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", [f"t{i}" for i in range(N)])
    rng = np.random.default_rng(0)
    for i in range(3):
        db.write_rep("m", "c", "d", f"hidden.{i}", rng.standard_normal((N, 8)), pooling="mean", dtype="float32",
                     codec="none" if i >= 1 else None)  # 2 and 3: same layout
    yield db
    db.close()


def _array_dir(db: actdb.Database, rep_id: int) -> Path:
    return Path(db.arrays_location) / arrays.rep_path(rep_id)


# ---------------------------------------------------------------- repair stays inside the store
@pytest.mark.parametrize("status", ["writing", "complete", "replaced"])
@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_repair_never_follows_a_catalog_path_outside_the_store(tmp_path, small_chunks, catalog_url, status, where):
    db = actdb.open(str(tmp_path / "store"), catalog_url=catalog_url)
    db.add_dataset("d", [f"t{i}" for i in range(N)])
    db.write_rep("m", "c", "d", "hidden.0", np.ones((N, 8)), pooling="mean")
    victim = tmp_path / "victim"
    (victim / "inner").mkdir(parents=True)
    (victim / "inner" / "precious.txt").write_text("keep me")
    path = "../../victim" if where == "relative" else str(victim)
    _set_path(db, 1, path, status)
    if status == "complete":
        raises_actdb(lambda: db.read_rep(1).to_numpy(), CorruptStore, match="never follows")
    report = db.verify()
    if status != "replaced":
        assert [(p.rep_id, p.kind) for p in report.problems] in ([(1, "corrupt")], [(1, "leftover")])
    db.verify(repair=True)
    assert (victim / "inner" / "precious.txt").read_text() == "keep me"
    assert not (db.path / "quarantine").exists() or not any(
        (db.path / "quarantine").rglob("precious.txt"))
    db.close()


def test_orphan_cleanup_touches_only_names_actdb_writes(three_reps, tmp_path):
    db = three_reps
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    (Path(db.arrays_location) / "reps" / "not-a-rep").mkdir()
    (Path(db.arrays_location) / "reps" / "link").symlink_to(outside, target_is_directory=True)
    report = db.verify(repair=True)
    assert (outside / "keep.txt").read_text() == "x"
    assert (Path(db.arrays_location) / "reps" / "not-a-rep").is_dir()
    assert any("not an array actdb writes" in p.message for p in report.problems)
    raises_actdb(lambda: arrays.delete_array(arrays.open_root(db.arrays_location, read_only=False), "../x"),
                 CorruptStore, match="refusing")


# ---------------------------------------------------------------- loud at read time
def _flip_data_byte(path: Path, where: float) -> None:
    data = bytearray(path.read_bytes())
    index_bytes = 16 * arrays.CHUNKS_PER_SHARD + 4
    data[int((len(data) - index_bytes) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def _copy_shard_of_rep_3(db: actdb.Database, rep_id: int) -> None:
    shutil.copyfile(_array_dir(db, 3) / "c" / "1" / "0", _array_dir(db, rep_id) / "c" / "1" / "0")


def _edit_dtype(db: actdb.Database, rep_id: int) -> None:
    meta = _array_dir(db, rep_id) / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["data_type"] = "int32"
    meta.write_text(json.dumps(doc))


DAMAGE = {
    "flipped byte (uncompressed)": lambda db: _flip_data_byte(_array_dir(db, 2) / "c" / "1" / "0", 0.37),
    "another rep's shard copied in": lambda db: _copy_shard_of_rep_3(db, 2),
    "deleted shard": lambda db: (_array_dir(db, 2) / "c" / "1" / "0").unlink(),
    "dtype edited in zarr.json": lambda db: _edit_dtype(db, 2),
    "array folder of another rep": lambda db: (shutil.rmtree(_array_dir(db, 2)),
                                               shutil.copytree(_array_dir(db, 3), _array_dir(db, 2))),
}


def _local_shards(opened: OpenedArray) -> RowReader:
    """The local shard reader only (these arrays are local, with a codec it decodes)."""
    reader = LocalShards.for_array(opened)
    assert reader is not None, "the local shard reader declined an array actdb wrote"
    return reader


READERS = {"local": _local_shards, "zarr": ZarrRows}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("how", list(DAMAGE))
def test_damage_is_an_error_on_the_next_read(three_reps, how, reader):
    db = three_reps

    def rep2() -> arrays.RepArray:
        return db.read_rep(2).with_reader(READERS[reader])

    intact = rep2().to_numpy()
    DAMAGE[how](db)
    raises_actdb(lambda: rep2().to_numpy(), CorruptStore, match="rep 2")
    if how in ("flipped byte (uncompressed)", "another rep's shard copied in", "deleted shard"):
        # the undamaged first shard still reads, and the error names the damaged rows
        np.testing.assert_array_equal(rep2()[0:512], intact[:512])
        exc = raises_actdb(lambda: rep2()[512:N], CorruptStore, match=r"rows \d+:\d+ \(chunk \d+\)")
        first, _, chunk = (int(v) for v in re.search(r"rows (\d+):(\d+) \(chunk (\d+)\)", str(exc)).groups())
        assert first == chunk * 16 and chunk >= 32  # a chunk of the second shard
        raises_actdb(lambda: rep2()[first + 3: first + 4], CorruptStore, match=f"chunk {chunk}\\)")
    report = db.verify()
    assert [(p.rep_id, p.kind) for p in report.problems] == [(2, "corrupt")], report.problems


def test_every_flipped_byte_of_a_compressed_rep_is_detected(tmp_path, small_chunks):
    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", [f"t{i}" for i in range(N)])
    db.write_rep("m", "c", "d", "hidden.0", np.random.default_rng(1).standard_normal((N, 8)), pooling="mean")
    shard = _array_dir(db, 1) / "c" / "0" / "0"
    original = shard.read_bytes()
    rng = np.random.default_rng(2)
    positions = sorted(set(rng.integers(0, len(original), 60).tolist()) | {0, len(original) - 1})
    for pos in positions:
        data = bytearray(original)
        data[pos] ^= 1 << int(rng.integers(0, 8))
        shard.write_bytes(bytes(data))
        raises_actdb(lambda: db.read_rep(1).to_numpy(), CorruptStore, match="rep 1")
    shard.write_bytes(original)
    assert db.read_rep(1).to_numpy().shape == (N, 8)
    db.close()


def test_a_rep_of_zeros_has_no_stored_chunks_and_still_reads(tmp_path, small_chunks):
    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", [f"t{i}" for i in range(N)])
    db.write_rep("m", "c", "d", "hidden.0", np.zeros((N, 8)), pooling="mean")
    assert not (_array_dir(db, 1) / "c").exists()  # zarr stores no chunk of fill values
    assert db.read_rep(1).has_checksums
    np.testing.assert_array_equal(db.read_rep(1).to_numpy(), 0)
    assert db.verify().clean
    db.close()


def test_arrays_without_checksums_are_sealed_by_repair(three_reps):
    db = three_reps
    import zarr

    for rep_id in (1, 2):
        arr = zarr.open_array(str(Path(db.arrays_location)), path=arrays.rep_path(rep_id), mode="r+")
        arr.attrs.__delitem__(CRC_ATTR)
    assert not db.read_rep(1).has_checksums and db.read_rep(3).has_checksums
    before = db.read_rep(1).to_numpy()
    report = db.verify(repair=True)
    assert report.clean and sorted(report.repaired) == [
        "added chunk checksums to rep 1 (hidden.0)", "added chunk checksums to rep 2 (hidden.1)"]
    assert db.read_rep(1).has_checksums
    np.testing.assert_array_equal(db.read_rep(1).to_numpy(), before)
    _copy_shard_of_rep_3(db, 1)
    raises_actdb(lambda: db.read_rep(1).to_numpy(), CorruptStore)


def test_a_resumed_write_records_the_checksums_of_every_chunk(tmp_path, small_chunks):
    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", [f"t{i}" for i in range(N)])
    x = np.random.default_rng(3).standard_normal((N, 8)).astype("float32")
    writer = db.rep_writer("m", "c", "d", "hidden.0", n_rows=None, dim=8, pooling="mean", dtype="float32")
    writer.append(x[:700])  # one shard flushed, 188 rows buffered and lost
    del writer
    with db.rep_writer("m", "c", "d", "hidden.0", n_rows=None, dim=8, pooling="mean", dtype="float32") as resumed:
        assert resumed.rows_written == 512
        resumed.append(x[512:])
    np.testing.assert_array_equal(db.read_rep(1).to_numpy(), x)
    assert db.read_rep(1).has_checksums and db.verify().clean
    db.close()


# ---------------------------------------------------------------- float16 underflow
def test_float16_underflow_is_counted_and_warned(tmp_path):
    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", [f"t{i}" for i in range(100)])
    x = np.random.default_rng(4).standard_normal((100, 10))
    x[:, :2] = 1e-8  # 20% of the values: too small for float16
    x[0, 2] = 1e-40
    with pytest.warns(UnderflowWarning, match=r"201 of 1000 values \(20\.10%\) at site 'hidden\.0'.*float32"):
        db.write_rep("m", "c", "d", "hidden.0", x, pooling="mean")
    assert np.count_nonzero(db.read_rep(1).to_numpy()[:, :2]) == 0
    import zarr

    assert zarr.open_array(db.arrays_location, path="reps/000000001", mode="r").attrs["actdb_n_underflow"] == 201
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        db.write_rep("m", "c", "d", "hidden.1", x, pooling="mean", dtype="float32")  # 1e-40 survives as subnormal
        y = np.random.default_rng(5).standard_normal((100, 20))
        y[0, :15] = 1e-8  # 15 values in 2,000 (0.75%): below the warning's share (1%)
        db.write_rep("m", "c", "d", "hidden.2", y, pooling="mean")
    db.close()


def test_catalog_paths_are_checked_on_every_backend(db):
    db.add_dataset("d", ["a", "b"])
    db.write_rep("m", "c", "d", "hidden.0", np.ones((2, 3)), pooling="mean")
    with db.catalog.connect() as conn:
        assert conn.execute(sa.select(S.rep.c.path)).scalar_one() == "reps/000000001"
    _set_path(db, 1, "reps/000000002")  # another rep's folder: not followed either
    raises_actdb(lambda: db.read_rep(1).to_numpy(), CorruptStore, match="never follows")
