"""The store: one directory with ``catalog.duckdb`` (or a catalog URL) and ``arrays/``.

All persistent state goes through :class:`Store`. Reps are written in two phases:
a catalog row with status ``writing``, then the array, then (one transaction) the row
flips to ``complete`` with its checksum and statistics. Readers only see ``complete``
reps; a crash leaves a ``writing`` row that a resumed ingest continues or
``verify(repair=True)`` removes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from actdb.errors import AlreadyExists, InvalidInput, NotAStore, NotFound, close_matches
from actdb.store import arrays as A
from actdb.store import migrate, schema as S
from actdb.store.catalog import Catalog, bulk_insert, insert_if_absent
from actdb.store.moments_files import MomentFiles, drop_rows
from actdb.store.parse import check_text, check_utf8, parse_name
from actdb.store.records import CheckpointInfo, DatasetInfo, ModelInfo
from actdb.store.reps import RepsMixin

MARKER = "actdb.json"
FORMAT = 1


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def dataset_hash(texts: Sequence[str]) -> str:
    """Content hash of a dataset: its texts in order (sha256 over length-prefixed parts).

    The identity two stores compare rep against rep. Labels and splits are annotations that
    may differ between stores or be added later; they do not enter it (revision 0004; each
    text is still followed by two empty parts, so hashes of unlabelled datasets stay as they
    were before)."""
    h = hashlib.sha256()
    for text in texts:
        for data in (text.encode("utf-8"), b"\xff", b"\xff"):
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return "sha256:" + h.hexdigest()


def _annotation(values: Sequence[Any] | None) -> list[str | None] | None:
    return None if values is None else [None if v is None else str(v) for v in values]


def _first_difference(have: Sequence[Any], given: Sequence[Any]) -> str:
    i = next(i for i, (a, b) in enumerate(zip(have, given)) if a != b)
    return f"{i}: {have[i]!r} stored, {given[i]!r} given"


def weights_mismatch(model: str, checkpoint: str, stored: str, given: str) -> str:
    """The message for new weights under a stored checkpoint's name: both hashes, and the
    ways out (another checkpoint or model name; or delete the stored checkpoint first)."""
    return (
        f"checkpoint {model}/{checkpoint} is stored with weights {stored}, but these weights hash to "
        f"{given}; stored activations are never replaced silently. Ingest the new weights under "
        "another checkpoint name (checkpoints={'NEW': PATH} / --checkpoint NEW=PATH) or another model "
        f"name (name= / --name), or remove checkpoint {checkpoint!r} of {model!r} from the store "
        "first (`actdb rm`), then ingest again")


def _lookup(name: object, what: str) -> None:
    """A name to look up: one that no catalog can hold (a lone surrogate) is InvalidInput
    here, not a driver's encoding error."""
    if isinstance(name, str):
        check_utf8(name, f"{what} name {name!r:.80}")


class Store(RepsMixin):
    """Catalog + arrays of one store directory. See :func:`actdb.open`."""

    def __init__(self, path: str | os.PathLike[str], *, catalog_url: str | None = None,
                 read_only: bool = False, create: bool = True, busy_timeout: float = 10.0,
                 arrays_url: str | None = None, storage_options: dict[str, Any] | None = None):
        self.path = Path(path).expanduser().resolve()
        if arrays_url is not None:
            arrays_url = A.parse_arrays_url(arrays_url)
        self.read_only = read_only
        self._dataset_cache: dict[str, DatasetInfo] = {}
        marker = self.path / MARKER
        if marker.is_file():
            info = json.loads(marker.read_text())
            stored_url = info.get("catalog_url")
            if catalog_url is not None and stored_url is not None and catalog_url != stored_url:
                raise InvalidInput(f"store {self.path} uses catalog {stored_url!r}, not {catalog_url!r}")
            catalog_url = catalog_url or stored_url
            arrays_location = info.get("arrays", "arrays")
            if arrays_url is not None and arrays_url != arrays_location:
                raise InvalidInput(f"store {self.path} keeps its arrays at {arrays_location!r}, not {arrays_url!r}")
        elif self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise NotAStore(
                f"{self.path} is not an actdb store (no {MARKER} in it); pass an empty or new "
                "directory to create one, or the path of an existing store"
            )
        elif read_only or not create:
            raise NotAStore(f"{self.path} is not an actdb store yet; create it with `actdb init {self.path}`")
        else:
            arrays_location = arrays_url or "arrays"
            self.path.mkdir(parents=True, exist_ok=True)
            if arrays_url is None:
                (self.path / "arrays").mkdir(exist_ok=True)
            tmp = self.path / (MARKER + ".tmp")
            tmp.write_text(json.dumps({"format": FORMAT, "catalog_url": catalog_url, "arrays": arrays_location}))
            tmp.replace(marker)
        self.catalog_url = catalog_url or f"duckdb:///{self.path / 'catalog.duckdb'}"
        location = str(arrays_location)
        if "://" not in location:
            location = str(self.path / location)
        self.arrays_location = location
        self.storage_options = storage_options
        self.catalog = Catalog(self.catalog_url, read_only=read_only, where=str(self.path), busy_timeout=busy_timeout)
        self._root = A.open_root(location, read_only=read_only, storage_options=storage_options)
        self._prepare_schema()

    # ----------------------------------------------------------------- schema
    def _prepare_schema(self) -> None:
        if self.read_only and self.catalog.dialect == "duckdb" and not (self.path / "catalog.duckdb").exists():
            raise NotAStore(f"{self.path} has no catalog yet; open it once for writing to create it")
        with self.catalog.connect() as conn:
            revision = migrate.current_revision(conn)
        migrate.check_revision(revision, str(self.path))
        if revision != migrate.head_revision():
            if self.read_only:
                raise InvalidInput(
                    f"store {self.path} is at schema revision {revision!r}, older than this actdb's "
                    f"{migrate.head_revision()!r}; run `actdb migrate {self.path}` (or open it for writing once)"
                )
            migrate.upgrade(self.catalog.engine)

    @property
    def moment_files(self) -> MomentFiles:
        """The cached per-rep moments' groups beside the arrays
        (:class:`~actdb.store.moments_files.MomentFiles`)."""
        return MomentFiles(self._root)

    def schema_revision(self) -> str | None:
        with self.catalog.connect() as conn:
            return migrate.current_revision(conn)

    def close(self) -> None:
        self.catalog.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}{' read-only' if self.read_only else ''}>"

    # ----------------------------------------------------------------- models
    def add_model(self, name: str, *, family: str | None = None, architecture: str | None = None,
                  width: int | None = None, depth: int | None = None, n_params: int | None = None,
                  meta: dict[str, Any] | None = None) -> ModelInfo:
        """Register a model (idempotent: an existing model of that name is returned, with
        any newly given metadata filled in)."""
        name = parse_name(name, "model", allow_slash=True)
        given = {"family": family, "architecture": architecture, "width": width, "depth": depth,
                 "n_params": n_params, "meta": _json(meta)}
        with self.catalog.connect(write=True) as conn:
            row = conn.execute(sa.select(S.model).where(S.model.c.name == name)).mappings().first()
            # insert-if-absent: a writer that loses a race to create it proceeds as if it had found it
            if row is None and not insert_if_absent(conn, S.model, {"name": name, "created_at": now(), **given},
                                                    ("name",)):
                row = conn.execute(sa.select(S.model).where(S.model.c.name == name)).mappings().one()
            fill = {} if row is None else {k: v for k, v in given.items() if v is not None and row[k] is None}
            if fill:
                conn.execute(S.model.update().where(S.model.c.id == row["id"]).values(**fill))
        return self.model(name)

    def model(self, name: str) -> ModelInfo:
        _lookup(name, "model")
        with self.catalog.connect() as conn:
            row = conn.execute(sa.select(S.model).where(S.model.c.name == name)).mappings().first()
            if row is None:
                known = conn.execute(sa.select(S.model.c.name)).scalars().all()
                raise NotFound(f"no model named {name!r} in {self.path}; {close_matches(str(name), known)}")
        return ModelInfo(row["id"], row["name"], row["family"], row["architecture"], row["width"], row["depth"])

    def models(self) -> list[ModelInfo]:
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.select(S.model).order_by(S.model.c.id)).mappings().all()
        return [ModelInfo(r["id"], r["name"], r["family"], r["architecture"], r["width"], r["depth"]) for r in rows]

    # ------------------------------------------------------------ checkpoints
    def add_checkpoint(self, model: str, name: str, *, step: int | None = None, tokens_seen: int | None = None,
                       weights_hash: str | None = None, source: str | None = None,
                       meta: dict[str, Any] | None = None) -> CheckpointInfo:
        """Register a checkpoint of ``model`` (created if new). Idempotent for equal
        arguments; a different ``weights_hash`` for an existing name is refused."""
        name = parse_name(name, "checkpoint")
        model_info = self.add_model(model)
        where = (S.checkpoint.c.model_id == model_info.id, S.checkpoint.c.name == name)
        with self.catalog.connect(write=True) as conn:
            row = conn.execute(sa.select(S.checkpoint).where(*where)).mappings().first()
            # insert-if-absent: a writer that loses a race to create it proceeds as if it had found it
            if row is None and not insert_if_absent(conn, S.checkpoint, dict(
                    model_id=model_info.id, name=name, step=step, tokens_seen=tokens_seen,
                    weights_hash=weights_hash, source=source, meta=_json(meta), created_at=now()),
                    ("model_id", "name")):
                row = conn.execute(sa.select(S.checkpoint).where(*where)).mappings().one()
            if row is None:
                pass  # created here
            elif weights_hash is not None and row["weights_hash"] not in (None, weights_hash):
                raise AlreadyExists(weights_mismatch(model_info.name, name, row["weights_hash"], weights_hash))
            else:
                fill = {k: v for k, v in {"step": step, "tokens_seen": tokens_seen,
                                          "weights_hash": weights_hash, "source": source}.items()
                        if v is not None and row[k] is None}
                if fill:
                    conn.execute(S.checkpoint.update().where(S.checkpoint.c.id == row["id"]).values(**fill))
        return self.checkpoint(model, name)

    def _checkpoint_id(self, model: str, name: str) -> tuple[int, int | None]:
        """(id, step) of checkpoint ``model/name``, creating both if new: one query when
        they exist (the hot path of writing many reps)."""
        q = (sa.select(S.checkpoint.c.id, S.checkpoint.c.step)
             .join(S.model, S.model.c.id == S.checkpoint.c.model_id)
             .where(S.model.c.name == model, S.checkpoint.c.name == name))
        with self.catalog.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            info = self.add_checkpoint(model, name)
            return info.id, info.step
        return row[0], row[1]

    def checkpoint(self, model: str, name: str) -> CheckpointInfo:
        found = [c for c in self.checkpoints(model) if c.name == name]
        if not found:
            known = [c.name for c in self.checkpoints(model)]
            raise NotFound(f"model {model!r} has no checkpoint {name!r}; {close_matches(name, known)}")
        return found[0]

    def checkpoints(self, model: str | None = None) -> list[CheckpointInfo]:
        """Checkpoints (of one model, or all), ordered by model then step; each names the
        earlier checkpoint of the same model with identical weights, if any."""
        _lookup(model, "model")
        if model is not None:
            self.model(model)
        q = "SELECT checkpoint_id, model, checkpoint, step, tokens_seen, weights_hash, duplicate_of FROM checkpoints"
        params: dict[str, Any] = {}
        if model is not None:
            q += " WHERE model = :model"
            params["model"] = model
        q += " ORDER BY model, step NULLS LAST, checkpoint_id"
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.text(q), params).all()
        return [CheckpointInfo(*r) for r in rows]

    def duplicate_checkpoints(self) -> list[CheckpointInfo]:
        """Checkpoints whose weights hash equals an earlier checkpoint's of the same model."""
        return [c for c in self.checkpoints() if c.duplicate_of is not None]

    # --------------------------------------------------------------- datasets
    def add_dataset(self, name: str, texts: Iterable[str], *, labels: Sequence[Any] | None = None,
                    splits: Sequence[Any] | None = None, meta: dict[str, Any] | None = None) -> DatasetInfo:
        """Store a list of texts (the stimuli), with optional labels and splits.

        Identified by its texts (content hash): adding the same texts under the same name
        again is a no-op, and also fills in labels or splits the stored dataset does not have
        yet; different texts under an existing name are refused, and so are labels or splits
        that contradict stored ones (replace them with :meth:`annotate`)."""
        name = parse_name(name, "dataset")
        texts = list(texts)
        if not texts:
            raise InvalidInput(f"dataset {name!r} has no texts; give at least one")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInput(f"dataset {name!r}: text {i} is {type(t).__name__}, not str")
            check_text(t, f"text {i} of dataset {name!r}")
        for what, col in (("labels", labels), ("splits", splits)):
            if col is not None and len(col) != len(texts):
                raise InvalidInput(f"dataset {name!r}: {len(col)} {what} for {len(texts)} texts")
            for i, v in enumerate(col or ()):
                if v is not None:
                    check_text(str(v), f"{what[:-1]} {i} of dataset {name!r}")
        content = dataset_hash(texts)
        existing = self._dataset_row(name)
        if existing is not None:
            return self._add_annotations(self._same_dataset(existing, content), labels, splits)
        table = pa.table({
            "example": pa.array(range(len(texts)), pa.int32()),
            "text": pa.array(texts, pa.string()),
            "label": pa.array(None if labels is None else [None if v is None else str(v) for v in labels],
                              pa.string()) if labels is not None else pa.nulls(len(texts), pa.string()),
            "split": pa.array([None if v is None else str(v) for v in splits], pa.string())
            if splits is not None else pa.nulls(len(texts), pa.string()),
        })
        with self.catalog.connect(write=True) as conn:
            # insert-if-absent: a writer that loses a race to create it proceeds as if it had
            # found it (PostgreSQL makes it wait until the winner's examples are committed)
            created = insert_if_absent(conn, S.dataset, dict(
                name=name, content_hash=content, n_examples=len(texts), meta=_json(meta), created_at=now()),
                ("name",))
            row = conn.execute(sa.select(S.dataset).where(S.dataset.c.name == name)).mappings().one()
            if created:
                table = table.add_column(0, "dataset_id", pa.array([row["id"]] * len(texts), pa.int32()))
                bulk_insert(conn, S.example, table)
        if not created:
            found = self._same_dataset(DatasetInfo(row["id"], row["name"], row["content_hash"], row["n_examples"]),
                                       content)
            return self._add_annotations(found, labels, splits)
        return self.dataset(name)

    def _add_annotations(self, ds: DatasetInfo, labels: Sequence[Any] | None,
                         splits: Sequence[Any] | None) -> DatasetInfo:
        """Fill in labels / splits a stored dataset lacks; refuse ones that contradict it."""
        stored = self.examples(ds.name)
        changes: dict[str, list[str | None]] = {}
        for column, given in (("label", _annotation(labels)), ("split", _annotation(splits))):
            if given is None:
                continue
            have = stored.column(column).to_pylist()
            if have == given:
                continue
            if any(v is not None for v in have):
                raise AlreadyExists(
                    f"dataset {ds.name!r} already has other {column}s (e.g. example {_first_difference(have, given)}); "
                    f"replace them with db.annotate({ds.name!r}, {column}s=...), or add the texts under another name")
            changes[column] = given
        if changes:
            self._write_annotations(ds, changes)
        return ds

    def annotate(self, dataset: str, *, labels: Sequence[Any] | None = None,
                 splits: Sequence[Any] | None = None) -> DatasetInfo:
        """Set (or replace) the labels and/or splits of a stored dataset, one per example.

        The dataset's identity (its texts) is unchanged; cached values computed over a row
        subset of its reps (which may select by label or split) are dropped."""
        ds = self.dataset(dataset)
        changes: dict[str, list[str | None]] = {}
        for column, given in (("label", _annotation(labels)), ("split", _annotation(splits))):
            if given is None:
                continue
            if len(given) != ds.n_examples:
                raise InvalidInput(f"dataset {ds.name!r}: {len(given)} {column}s for {ds.n_examples} examples")
            for i, v in enumerate(given):
                if v is not None:
                    check_utf8(v, f"{column} {i} of dataset {ds.name!r}")
            changes[column] = given
        if not changes:
            raise InvalidInput("annotate() needs labels= or splits=")
        self._write_annotations(ds, changes)
        return ds

    def _write_annotations(self, ds: DatasetInfo, changes: dict[str, list[str | None]]) -> None:
        """Write annotation columns, and drop subset-keyed caches of the dataset's reps."""
        params = [{"d": ds.id, "e": i, **{c: v[i] for c, v in changes.items()}} for i in range(ds.n_examples)]
        sets = ", ".join(f"{c} = :{c}" for c in changes)
        with self.catalog.connect(write=True) as conn:
            conn.execute(sa.text(f"UPDATE example SET {sets} WHERE dataset_id = :d AND example = :e"), params)
            reps = sa.select(S.rep.c.id).where(S.rep.c.dataset_id == ds.id)
            conn.execute(S.result.delete().where(S.result.c.subset_hash != "all", sa.or_(
                S.result.c.rep_a.in_(reps), S.result.c.rep_b.in_(reps))))
            drop_rows(conn, self._root, S.rep_moments.c.rep_id.in_(reps))

    @staticmethod
    def _same_dataset(existing: DatasetInfo, content: str) -> DatasetInfo:
        """``existing`` when it holds the contents hashed ``content``; datasets are immutable."""
        if existing.content_hash != content:
            raise AlreadyExists(
                f"dataset {existing.name!r} is already stored with other contents ({existing.content_hash[:19]}...); "
                "datasets are immutable: choose another name")
        return existing

    def _dataset_row(self, name: str) -> DatasetInfo | None:
        _lookup(name, "dataset")
        cached = self._dataset_cache.get(name)  # datasets are immutable: safe to cache
        if cached is not None:
            return cached
        with self.catalog.connect() as conn:
            r = conn.execute(sa.select(S.dataset).where(S.dataset.c.name == name)).mappings().first()
        if r is None:
            return None
        info = DatasetInfo(r["id"], r["name"], r["content_hash"], r["n_examples"])
        self._dataset_cache[name] = info
        return info

    def dataset(self, name: str) -> DatasetInfo:
        row = self._dataset_row(name)
        if row is None:
            raise NotFound(f"no dataset named {name!r} in {self.path}; "
                           f"{close_matches(str(name), [d.name for d in self.datasets()])}. Add it with add_dataset()")
        return row

    def datasets(self) -> list[DatasetInfo]:
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.select(S.dataset).order_by(S.dataset.c.id)).mappings().all()
        return [DatasetInfo(r["id"], r["name"], r["content_hash"], r["n_examples"]) for r in rows]

    def texts(self, dataset: str) -> list[str]:
        ds = self.dataset(dataset)
        with self.catalog.connect() as conn:
            return list(conn.execute(sa.select(S.example.c.text).where(S.example.c.dataset_id == ds.id)
                                     .order_by(S.example.c.example)).scalars())

    def examples(self, dataset: str) -> pa.Table:
        """The example table of a dataset: example, text, label, split."""
        ds = self.dataset(dataset)
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.select(S.example.c.example, S.example.c.text, S.example.c.label,
                                          S.example.c.split).where(S.example.c.dataset_id == ds.id)
                                .order_by(S.example.c.example)).all()
        cols = list(zip(*rows)) if rows else [[], [], [], []]
        return pa.table({"example": pa.array(cols[0], pa.int32()), "text": pa.array(cols[1], pa.string()),
                         "label": pa.array(cols[2], pa.string()), "split": pa.array(cols[3], pa.string())})
