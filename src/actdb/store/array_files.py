"""Where rep arrays live in the byte store and how their files are made: id-derived paths, the
arrays URL, creating, opening, listing and deleting arrays, sealing them and checking their
metadata against the catalog.

Every rep array is self-describing for plain zarr and xarray: Zarr v3 ``dimension_names``
``("row", "feature")`` (set when it is created) and the rep's names as attributes
(``model``, ``checkpoint``, ``step``, ``site``, ``layer``, ``dataset``, ``pooling``,
``tokenizer``; written when it is sealed, :func:`rep_attributes`); ``actdb verify --repair``
adds both to arrays written before (:func:`describe_array`).

Paths come from catalog ids (:func:`rep_path`, :func:`moments_path`), never from user-supplied
names; a catalog ``path`` column is only checked against them (:func:`checked_path`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage

from actdb.errors import CorruptStore, InvalidInput
from actdb.store.checksums import CRC_ATTR, REP_ATTR
from actdb.store.codecs import CODECS, NUMPY_STORAGE, StoredDtype, codec_chain, codec_name
from actdb.store.records import RepRecord

REP_PATH = re.compile(r"reps/[0-9]{9}")
MOMENTS_PATH = re.compile(r"moments/[0-9]{9}")
DIMENSION_NAMES = ("row", "feature")
DESCRIPTIVE_ATTRS = ("model", "checkpoint", "step", "site", "layer", "dataset", "pooling", "tokenizer")


def rep_path(rep_id: int) -> str:
    """Array path of a rep: from its catalog id only."""
    return f"reps/{int(rep_id):09d}"


def moments_path(row_id: int) -> str:
    """Zarr group of one cached per-rep moments row (``rep_moments.id``): from the id only."""
    return f"moments/{int(row_id):09d}"


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


def create_array(root: zarr.storage.StoreLike, rep_id: int, *, n_rows: int, dim: int, dtype: StoredDtype,
                 codec: str, chunk_rows: int, shard_rows: int) -> zarr.Array[Any]:
    """A new, empty array for rep ``rep_id`` at its id-derived path; it records its owner."""
    arr = zarr.create_array(
        root, name=rep_path(rep_id), shape=(n_rows, dim), dtype=NUMPY_STORAGE[dtype],
        chunks=(chunk_rows, dim), shards=(shard_rows, dim), compressors=codec_chain(codec),
        fill_value=0, overwrite=True, attributes={"actdb_dtype": dtype, REP_ATTR: int(rep_id)},
        dimension_names=DIMENSION_NAMES,
    )
    return arr


def rep_attributes(rep: RepRecord) -> dict[str, Any]:
    """The descriptive attributes of a rep's array (its names, so that plain zarr/xarray users
    know what they opened); ``step``, ``layer`` and ``tokenizer`` only when known."""
    values = {"model": rep.model, "checkpoint": rep.checkpoint, "step": rep.step, "site": rep.site,
              "layer": rep.layer, "dataset": rep.dataset, "pooling": rep.pooling, "tokenizer": rep.tokenizer}
    return {k: v for k, v in values.items() if v is not None}


def seal(array: zarr.Array[Any], chunk_checksums: list[int], *, underflow: int | None = None,
         describe: dict[str, Any] | None = None) -> None:
    """Record the per-chunk checksums of a fully written array (see :mod:`actdb.store.checksums`),
    when known how many non-zero values were stored as zero (``actdb_n_underflow``) and the
    rep's descriptive attributes (``describe``, from :func:`rep_attributes`)."""
    attrs: dict[str, Any] = dict(describe or {})
    attrs[CRC_ATTR] = [int(v) for v in chunk_checksums]
    if underflow is not None:
        attrs["actdb_n_underflow"] = int(underflow)
    array.update_attributes(attrs)  # one zarr.json write (attrs.update writes it once per key)


def undescribed(array: zarr.Array[Any], describe: dict[str, Any]) -> bool:
    """Whether an array lacks its ``dimension_names`` or any of the attributes in ``describe``."""
    names = getattr(array.metadata, "dimension_names", None)
    return names is None or any(k not in array.attrs for k in describe)


def describe_array(array: zarr.Array[Any], describe: dict[str, Any]) -> None:
    """Add ``dimension_names`` ``("row", "feature")`` and the attributes ``describe`` to an existing
    array (written by an older actdb): its ``zarr.json`` is rewritten through zarr's metadata
    API (``ArrayV3Metadata`` replaced, then saved), data untouched. Attributes already present
    are kept."""
    import dataclasses

    from zarr.core.metadata import ArrayV3Metadata
    from zarr.core.metadata.io import save_metadata
    from zarr.core.sync import sync

    if not isinstance(array.metadata, ArrayV3Metadata):
        raise CorruptStore(f"array {array.path!r} is not a Zarr v3 array; actdb writes only v3")
    attrs = {**describe, **dict(array.attrs)}
    meta = dataclasses.replace(array.metadata, dimension_names=DIMENSION_NAMES, attributes=attrs)
    sync(save_metadata(array.store_path, meta))


def check_metadata(array: zarr.Array[Any], *, rep_id: int, n_rows: int, dim: int, dtype: str, chunk_rows: int,
                   shard_rows: int, codec: str | None = None) -> None:
    """Raise CorruptStore unless the array's metadata is what the catalog says was written:
    shape, stored dtype (and its ``actdb_dtype`` attribute), chunk and shard shape, a codec
    chain actdb writes (the catalog's own, when ``codec`` is given), its owner."""
    where = f"rep {rep_id}"
    found: list[str] = []
    if tuple(array.shape) != (n_rows, dim):
        found.append(f"shape {tuple(array.shape)} != catalog ({n_rows}, {dim})")
    storage = NUMPY_STORAGE.get(dtype)
    if storage is None or np.dtype(array.dtype) != storage or array.attrs.get("actdb_dtype") != dtype:
        found.append(f"data type {np.dtype(array.dtype).name} (actdb_dtype {array.attrs.get('actdb_dtype')!r}) "
                     f"!= catalog {dtype!r}")
    if tuple(array.chunks) != (chunk_rows, dim) or tuple(array.shards or ()) != (shard_rows, dim):
        found.append(f"chunks {tuple(array.chunks)} / shards {array.shards} != catalog ({chunk_rows}, {dim}) / "
                     f"({shard_rows}, {dim})")
    name = codec_name(array.compressors)
    if name is None or (codec is not None and name != codec):
        found.append(f"codec chain {[type(c).__name__ for c in (array.compressors or ())]} != catalog "
                     f"{codec or 'one of ' + ', '.join(CODECS)!r}")
    owner = array.attrs.get(REP_ATTR)
    if owner is not None and owner != rep_id:
        found.append(f"the array belongs to rep {owner!r}")
    names = getattr(array.metadata, "dimension_names", None)  # absent on arrays of older stores: fine
    if names is not None and tuple(names) != DIMENSION_NAMES:
        found.append(f"dimension_names {tuple(names)} != {DIMENSION_NAMES}")
    if found:
        raise CorruptStore(f"{where}: its array's metadata does not match the catalog ({'; '.join(found)}): "
                           "zarr.json was edited or replaced. Run `actdb verify --repair` to quarantine the rep")


def open_array(root: zarr.storage.StoreLike, path: str) -> zarr.Array[Any]:
    try:
        return zarr.open_array(root, path=path, mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.ArrayNotFoundError) as exc:
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

        sync(root.delete_dir(path))  # type: ignore[union-attr,call-arg]
