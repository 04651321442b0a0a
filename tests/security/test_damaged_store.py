"""A damaged store: deleted shard files, a truncated shard, damaged or missing array
metadata, a damaged catalog. verify finds each and names the rep; --repair quarantines
it and leaves every other rep byte-identical; a damaged catalog is a typed error."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from security_kit import file_tree, raises_actdb

import actdb
from actdb.cli import main
from actdb.errors import CorruptStore, NotFound
from actdb.store import arrays

pytestmark = pytest.mark.slow
N = 1000  # rows: with 512-byte chunks, 16 rows a chunk, 512 a shard: two shard files a rep


@pytest.fixture
def damaged(tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 512)
    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", [f"t{i}" for i in range(N)])
    rng = np.random.default_rng(0)
    for i in range(3):
        db.write_rep("m", "c", "d", f"hidden.{i}", rng.standard_normal((N, 8)), pooling="mean", dtype="float32")
    before = {r.id: (r.checksum, db.read_rep(r).read_stored(0, N).tobytes()) for r in db.find_reps()}
    assert sorted(before) == [1, 2, 3]
    return db, before, Path(db.arrays_location) / "reps" / "000000002"


def _truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "deleted shard file": lambda a: (a / "c" / "1" / "0").unlink(),
    "all shard files deleted": lambda a: shutil.rmtree(a / "c"),
    "truncated shard": lambda a: _truncate(a / "c" / "0" / "0"),
    "flipped byte in a shard": lambda a: _flip(a / "c" / "1" / "0"),
    "damaged array metadata": lambda a: (a / "zarr.json").write_text("{not json"),
    "metadata of another shape": lambda a: (a / "zarr.json").write_text(
        (a / "zarr.json").read_text().replace("1000", "999", 1)),
    "deleted array metadata": lambda a: (a / "zarr.json").unlink(),
    "deleted array": lambda a: shutil.rmtree(a),
}


def _cli(capsys, *args: str) -> tuple[int, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("how", list(DAMAGE))
def test_verify_names_the_rep_and_repair_quarantines_it(damaged, capsys, how):
    db, before, array_dir = damaged
    DAMAGE[how](array_dir)
    report = db.verify()
    assert [(p.rep_id, p.kind) for p in report.problems] == [(2, "corrupt")], report.problems
    assert "rep 2 " in report.problems[0].message
    code, out = _cli(capsys, "verify", str(db.path))
    assert code == 1 and "rep 2 " in out and "1 problem" in out, out
    code, out = _cli(capsys, "verify", str(db.path), "--repair")
    assert code == 0 and "quarantined rep 2" in out and "clean" in out, out
    assert db.verify().clean
    assert db.rep(2).status == "corrupt"
    assert [r.id for r in db.find_reps()] == [1, 3]
    assert [r.rep_id for r in db.reps()] == [1, 3]
    raises_actdb(lambda: db.read_rep(2), NotFound)
    if how != "deleted array":
        assert (db.path / "quarantine" / "rep-2").is_dir()
    for rep_id in (1, 3):
        info = db.rep(rep_id)
        assert info.checksum == before[rep_id][0]
        assert db.read_rep(rep_id).read_stored(0, N).tobytes() == before[rep_id][1]


@pytest.mark.parametrize("how", ["truncated shard", "damaged array metadata", "deleted array"])
def test_reading_a_damaged_rep_is_a_typed_error(damaged, how):
    db, _, array_dir = damaged
    DAMAGE[how](array_dir)
    raises_actdb(lambda: db.read_rep(2).to_numpy(), CorruptStore, match="rep 2|reps/000000002")
    raises_actdb(lambda: db.reps().compare(measure="linear_cka").compute(), CorruptStore)
    assert db.sql("SELECT count(*) AS n FROM results").column("n")[0].as_py() == 0


@pytest.mark.parametrize("how", ["zeroed", "truncated", "random header", "text file"])
def test_a_damaged_catalog_is_a_typed_error_and_nothing_changes(damaged, how):
    db, _, _ = damaged
    db.close()
    catalog = db.path / "catalog.duckdb"
    data = catalog.read_bytes()
    if how == "zeroed":
        catalog.write_bytes(b"")
    elif how == "truncated":
        catalog.write_bytes(data[: len(data) // 2])
    elif how == "random header":
        catalog.write_bytes(np.random.default_rng(1).bytes(8192) + data[8192:])
    else:
        catalog.write_text("this is not a database\n")
    digest = hashlib.sha256(catalog.read_bytes()).hexdigest()
    tree = file_tree(db.path)
    for read_only in (False, True):
        # (a truncated file may open: the damage shows on the first read of a lost block)
        exc = raises_actdb(lambda: actdb.open(str(db.path), read_only=read_only).verify(), CorruptStore)
        assert "catalog" in str(exc) and str(db.path) in str(exc)
    assert hashlib.sha256(catalog.read_bytes()).hexdigest() == digest
    assert file_tree(db.path) == tree
