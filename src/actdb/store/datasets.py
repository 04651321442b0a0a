"""The ``dataset`` and ``example`` tables: the stimuli (texts) and their annotations."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
import zarr.storage

from actdb.errors import AlreadyExists, InvalidInput, NotFound, close_matches
from actdb.store import schema as S
from actdb.store.catalog import Catalog, bulk_insert, insert_if_absent
from actdb.store.clock import now
from actdb.store.models import check_lookup, to_json
from actdb.store.moments_files import drop_rows
from actdb.store.parse import check_text, check_utf8, parse_name
from actdb.store.records import DatasetInfo


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


def _dataset_info(row: Any) -> DatasetInfo:
    return DatasetInfo(id=row["id"], name=row["name"], content_hash=row["content_hash"], n_examples=row["n_examples"])


class DatasetRepository:
    """Datasets (immutable texts, identified by their content hash) and their annotations."""

    def __init__(self, catalog: Catalog, root: zarr.storage.StoreLike, where: str):
        self.catalog = catalog
        self.root = root  # the array root: annotating drops cached moments groups beside the arrays
        self.where = where
        self._cache: dict[str, DatasetInfo] = {}  # datasets are immutable: safe to cache by name

    def forget(self) -> None:
        """Empty the name cache (after datasets were removed, see :mod:`actdb.store.prune`)."""
        self._cache.clear()

    def add(self, name: str, texts: Iterable[str], *, labels: Sequence[Any] | None = None,
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
                name=name, content_hash=content, n_examples=len(texts), meta=to_json(meta), created_at=now()),
                ("name",))
            row = conn.execute(sa.select(S.dataset).where(S.dataset.c.name == name)).mappings().one()
            if created:
                table = table.add_column(0, "dataset_id", pa.array([row["id"]] * len(texts), pa.int32()))
                bulk_insert(conn, S.example, table)
        if not created:
            found = self._same_dataset(_dataset_info(row),
                                       content)
            return self._add_annotations(found, labels, splits)
        return self.get(name)

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
        ds = self.get(dataset)
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
            drop_rows(conn, self.root, S.rep_moments.c.rep_id.in_(reps))

    @staticmethod
    def _same_dataset(existing: DatasetInfo, content: str) -> DatasetInfo:
        """``existing`` when it holds the contents hashed ``content``; datasets are immutable."""
        if existing.content_hash != content:
            raise AlreadyExists(
                f"dataset {existing.name!r} is already stored with other contents ({existing.content_hash[:19]}...); "
                "datasets are immutable: choose another name")
        return existing

    def _dataset_row(self, name: str) -> DatasetInfo | None:
        check_lookup(name, "dataset")
        cached = self._cache.get(name)  # datasets are immutable: safe to cache
        if cached is not None:
            return cached
        with self.catalog.connect() as conn:
            r = conn.execute(sa.select(S.dataset).where(S.dataset.c.name == name)).mappings().first()
        if r is None:
            return None
        info = _dataset_info(r)
        self._cache[name] = info
        return info

    def get(self, name: str) -> DatasetInfo:
        row = self._dataset_row(name)
        if row is None:
            raise NotFound(f"no dataset named {name!r} in {self.where}; "
                           f"{close_matches(str(name), [d.name for d in self.all()])}. Add it with add_dataset()")
        return row

    def all(self) -> list[DatasetInfo]:
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.select(S.dataset).order_by(S.dataset.c.id)).mappings().all()
        return [_dataset_info(r) for r in rows]

    def texts(self, dataset: str) -> list[str]:
        ds = self.get(dataset)
        with self.catalog.connect() as conn:
            return list(conn.execute(sa.select(S.example.c.text).where(S.example.c.dataset_id == ds.id)
                                     .order_by(S.example.c.example)).scalars())

    def examples(self, dataset: str) -> pa.Table:
        """The example table of a dataset: example, text, label, split."""
        ds = self.get(dataset)
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.select(S.example.c.example, S.example.c.text, S.example.c.label,
                                          S.example.c.split).where(S.example.c.dataset_id == ds.id)
                                .order_by(S.example.c.example)).all()
        cols: list[Sequence[Any]] = list(zip(*rows)) if rows else [[], [], [], []]
        return pa.table({"example": pa.array(cols[0], pa.int32()), "text": pa.array(cols[1], pa.string()),
                         "label": pa.array(cols[2], pa.string()), "split": pa.array(cols[3], pa.string())})
