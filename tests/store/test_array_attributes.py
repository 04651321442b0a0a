"""Rep arrays describe themselves to plain zarr and xarray: ``dimension_names`` ("row", "feature")
and the rep's names as attributes; ``verify --repair`` adds them to arrays written without."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr
from zarr.core.metadata.io import save_metadata
from zarr.core.sync import sync

import actdb
from actdb.errors import CorruptStore
from actdb.store import arrays as A
from actdb.store.array_files import DESCRIPTIVE_ATTRS

NAMES = {"model": "m", "checkpoint": "final", "step": 7, "site": "hidden.2", "layer": 2, "dataset": "d",
         "pooling": "mean"}


@pytest.fixture
def store(tmp_path):
    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("d", ["a b", "c d e", "f"])
    db.add_checkpoint("m", "final", step=7)
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    rep = db.write_rep("m", "final", "d", "hidden.2", values, pooling="mean", dtype="float32")
    return db, tmp_path / "s" / "arrays", rep, values


def _strip(arrays, rep_id: int) -> None:
    """Rewrite an array's zarr.json as an older actdb wrote it: no dimension names, no names."""
    arr = zarr.open_array(str(arrays), path=A.rep_path(rep_id), mode="r+")
    attrs = {k: v for k, v in arr.attrs.items() if k not in DESCRIPTIVE_ATTRS}
    sync(save_metadata(arr.store_path, dataclasses.replace(arr.metadata, dimension_names=None, attributes=attrs)))


def test_a_new_rep_array_opens_labelled_in_plain_zarr_and_xarray(store):
    xr = pytest.importorskip("xarray")
    _, arrays, rep, values = store
    arr = zarr.open_array(str(arrays), path=rep.path, mode="r")
    assert arr.metadata.dimension_names == ("row", "feature")
    assert {k: arr.attrs[k] for k in NAMES} == NAMES
    ds = xr.open_zarr(str(arrays), group="reps", consolidated=False)
    var = ds[f"{rep.rep_id:09d}"]
    assert var.dims == ("row", "feature") and var.attrs["site"] == "hidden.2" and var.attrs["model"] == "m"
    assert np.array_equal(var.values, values)


def test_verify_repair_adds_dimension_names_and_attributes_to_old_arrays(store):
    db, arrays, rep, values = store
    _strip(arrays, rep.rep_id)
    old = zarr.open_array(str(arrays), path=rep.path, mode="r")
    assert old.metadata.dimension_names is None and "model" not in old.attrs
    assert db.verify().clean  # an array without them is intact
    assert np.array_equal(db.read_rep(rep.rep_id)[0:3], values)
    report = db.verify(repair=True)
    assert report.clean and report.repaired == (f"added dimension names and attributes to rep {rep.rep_id} "
                                                "(hidden.2)",)
    arr = zarr.open_array(str(arrays), path=rep.path, mode="r")
    assert arr.metadata.dimension_names == ("row", "feature") and {k: arr.attrs[k] for k in NAMES} == NAMES
    assert arr.attrs["actdb_rep_id"] == rep.rep_id and arr.attrs["actdb_chunk_crc32c"]  # others kept
    assert np.array_equal(arr[:], values) and db.verify().clean
    assert db.verify(repair=True).repaired == ()  # nothing left to add


def test_metadata_check_refuses_other_dimension_names(store):
    _, arrays, rep, _ = store
    arr = zarr.open_array(str(arrays), path=rep.path, mode="r+")
    sync(save_metadata(arr.store_path, dataclasses.replace(arr.metadata, dimension_names=("a", "b"))))
    arr = zarr.open_array(str(arrays), path=rep.path, mode="r")
    with pytest.raises(CorruptStore, match=r"dimension_names \('a', 'b'\)"):
        A.check_metadata(arr, rep_id=rep.rep_id, n_rows=3, dim=4, dtype="float32", chunk_rows=rep.chunk_rows,
                         shard_rows=rep.shard_rows)
