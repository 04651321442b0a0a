"""Cached per-rep moments live beside the arrays (Zarr groups ``moments/NNNNNNNNN``), not as
blobs in the catalog (issue 17.8): the catalog stays small, and a group that is missing or
damaged is a cache miss (recomputed, the same value), never a wrong value or a crash."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import actdb
from actdb.errors import CorruptStore
from actdb.store import arrays as A
from actdb.store import schema as S

N, DIM, REPS = 1200, 512, 3


def _fill(db: actdb.Database) -> None:
    rng = np.random.default_rng(11)
    db.add_dataset("d", [f"text {i}" for i in range(N)])
    for k in range(REPS):
        db.write_rep("m", "final", "d", f"hidden.{k}", rng.standard_normal((N, DIM)).astype(np.float32) + k,
                     pooling="mean", dtype="float32")


def _values(db: actdb.Database) -> dict[tuple[int, int], float]:
    rows = db.reps(model="m").compare(measure="procrustes").compute().rows
    return {(r["rep_id_a"], r["rep_id_b"]): r["value"] for r in rows}


def _rows(db: actdb.Database) -> list[tuple[int, int, int]]:
    with db.catalog.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(S.rep_moments.c.id, S.rep_moments.c.rep_id,
                                                         S.rep_moments.c.nbytes).order_by(S.rep_moments.c.id))]


def _group(db: actdb.Database, row_id: int) -> Path:
    return Path(db.arrays_location) / A.moments_path(row_id)


@pytest.fixture
def store(tmp_path: Path) -> actdb.Database:
    db = actdb.open(str(tmp_path / "s"))
    _fill(db)
    return db


def test_the_catalog_holds_keys_and_the_numbers_sit_beside_the_arrays(store: actdb.Database) -> None:
    db = store
    catalog = Path(db.path) / "catalog.duckdb"
    before = catalog.stat().st_size
    _values(db)
    rows = _rows(db)
    assert len(rows) == REPS
    assert "data" not in {c.name for c in S.rep_moments.columns}
    total = sum(nbytes for _, _, nbytes in rows)
    assert total >= REPS * DIM * (DIM + 1) // 2 * 8  # the upper triangles in float64, at least
    for row_id, _, nbytes in rows:
        group = _group(db, row_id)
        on_disk = sum(f.stat().st_size for f in group.rglob("*") if f.is_file())
        assert group.is_dir() and on_disk >= nbytes
    db.close()
    # the catalog did not grow by the moments (DuckDB grows in 256 kB blocks; blobs would add > total)
    assert catalog.stat().st_size - before < total


def test_a_missing_group_is_a_cache_miss_with_the_same_value(store: actdb.Database) -> None:
    db = store
    first = _values(db)
    (row_id, _, _), *_ = _rows(db)
    shutil.rmtree(_group(db, row_id))
    with db.catalog.connect(write=True) as conn:
        conn.execute(S.result.delete())
    plan = db.reps(model="m").compare(measure="procrustes")
    assert f"own moments of {REPS - 1} of {REPS} reps cached" in plan.explain(show=False)
    again = _values(db)
    assert again == first  # bitwise: recomputed from the data
    rows = _rows(db)
    assert len(rows) == REPS and row_id not in {r[0] for r in rows}  # replaced under a new id
    assert all(_group(db, r[0]).is_dir() for r in rows)
    assert db.verify().clean


@pytest.mark.parametrize("damage", ["truncate", "flip", "mark"])
def test_a_damaged_group_is_a_cache_miss_never_a_wrong_value(store: actdb.Database, damage: str) -> None:
    db = store
    first = _values(db)
    with db.catalog.connect(write=True) as conn:
        conn.execute(S.result.delete())
    for row_id, _, _ in _rows(db):
        chunk = next(p for p in (_group(db, row_id) / "block_0_0_upper").rglob("*")
                     if p.is_file() and p.name != "zarr.json")
        data = bytearray(chunk.read_bytes())
        if damage == "truncate":
            chunk.write_bytes(bytes(data[:100]))
        elif damage == "flip":
            data[len(data) // 2] ^= 0x01
            chunk.write_bytes(bytes(data))
        else:  # an interrupted write: the group's completion mark never landed
            meta = _group(db, row_id) / "zarr.json"
            meta.write_text(meta.read_text().replace("actdb_moments", "x"))
    assert _values(db) == first
    # the same on a rep with itself, which the cache alone would answer
    rows = db.reps(model="m", layer=0).compare(measure="procrustes").compute(recompute=False).rows
    assert rows[0]["value"] == first[(rows[0]["rep_id_a"], rows[0]["rep_id_b"])]


def test_moment_paths_come_from_ids_and_deletes_refuse_anything_else(tmp_path: Path) -> None:
    from actdb.store import moments_files as MF

    root = A.open_root(tmp_path, read_only=False)
    arrays = {"a": np.arange(6.0).reshape(2, 3), "n": np.array(7), "precision": np.array("float64")}
    assert MF.write_moments(root, 12, arrays) == 48
    back = MF.read_moments(root, 12)
    assert back is not None and back["a"].tobytes() == arrays["a"].tobytes() and int(back["n"]) == 7
    assert str(back["precision"]) == "float64"
    assert MF.read_moments(root, 13) is None and not MF.moments_exist(root, 13)
    MF.delete_moments(root, 12)
    assert not (tmp_path / "moments" / "000000012").exists()
    for bad in ("moments/../reps", "moments/12", "/etc", "moments/000000012/a"):
        with pytest.raises(CorruptStore, match="refusing to touch"):
            A.delete_array(root, bad)
