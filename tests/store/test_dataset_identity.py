"""A dataset's identity is its texts: labels and splits are annotations that may differ between
stores, be added later or be replaced, without breaking cross-store comparisons; revision 0004
migrates the hashes of labelled datasets in existing stores."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

import actdb
from actdb.errors import AlreadyExists, InvalidInput
from actdb.store import migrate

TEXTS = [f"sentence number {i}" for i in range(12)]
LABELS = ["even" if i % 2 == 0 else "odd" for i in range(12)]


def _reps(db: actdb.Database, dataset: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in (1, 2):
        db.write_rep("m", "final", dataset, f"hidden.{layer}", rng.standard_normal((12, 5)), pooling="mean")


def test_labels_do_not_change_identity_and_stores_compare(tmp_path):
    a = actdb.open(str(tmp_path / "a"))
    a.add_dataset("d", TEXTS, labels=LABELS)
    _reps(a, "d", 0)
    b = actdb.open(str(tmp_path / "b"))
    b.add_dataset("d", TEXTS)  # the same texts, no labels
    _reps(b, "d", 1)
    assert a.dataset("d").content_hash == b.dataset("d").content_hash
    b.close()
    a.attach(str(tmp_path / "b"), name="teamb")
    got = a.reps(model="m").compare(a.reps(store="teamb", model="m"), pairs="same_layer").compute()
    assert len(got.values()) == 2 and all(0 < v <= 1 for v in got.values())
    a.close()


def test_labels_can_be_added_later_but_not_contradicted(db):
    db.add_dataset("d", TEXTS)
    before = db.dataset("d").content_hash
    db.add_dataset("d", TEXTS)  # the same again: no-op
    db.add_dataset("d", TEXTS, labels=LABELS)  # labels added to an unlabelled dataset
    assert db.examples("d").column("label").to_pylist() == LABELS
    assert db.dataset("d").content_hash == before
    db.add_dataset("d", TEXTS, labels=LABELS)  # the same labels again: no-op
    db.add_dataset("d", TEXTS)  # no labels given: the stored ones stay
    assert db.examples("d").column("label").to_pylist() == LABELS
    with pytest.raises(AlreadyExists, match=r"other labels \(e\.g\. example 0: 'even' stored, 'x' given\).*annotate"):
        db.add_dataset("d", TEXTS, labels=["x"] * 12)
    with pytest.raises(AlreadyExists, match="other contents"):
        db.add_dataset("d", TEXTS[::-1], labels=LABELS)
    db.add_dataset("d", TEXTS, splits=["train"] * 6 + ["test"] * 6)
    assert db.examples("d").column("split").to_pylist()[-1] == "test"
    assert db.examples("d").column("label").to_pylist() == LABELS


def test_annotate_replaces_labels_and_drops_subset_caches(db):
    db.add_dataset("d", TEXTS, labels=LABELS)
    _reps(db, "d", 0)
    sel = db.reps(model="m")
    sel.compare(pairs="all").compute()  # cached over all rows: the 3 'all' rows counted below
    even = sel.compare(pairs="all", subset="label = 'even'").compute()
    odd = sel.compare(pairs="all", subset="label = 'odd'").compute()
    assert even.values() != pytest.approx(odd.values())

    def count(where: str) -> int:
        with db.catalog.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM result WHERE {where}")).scalar_one())

    n_whole = count("subset_hash = 'all'")
    assert n_whole == 3 and count("subset_hash <> 'all'") == 6  # symmetric pairs are stored once
    flipped = ["odd" if v == "even" else "even" for v in LABELS]
    db.annotate("d", labels=flipped)
    assert db.examples("d").column("label").to_pylist() == flipped
    assert count("subset_hash <> 'all'") == 0 and count("subset_hash = 'all'") == n_whole
    again = sel.compare(pairs="all", subset="label = 'even'").compute()
    assert not any(r["cached"] for r in again.rows)
    assert again.values() == pytest.approx(odd.values(), rel=1e-12)  # 'even' now selects the old odd rows
    assert all(r["cached"] for r in sel.compare(pairs="all").compute().rows)
    with pytest.raises(InvalidInput, match="11 labels for 12 examples"):
        db.annotate("d", labels=LABELS[:-1])
    with pytest.raises(InvalidInput, match="labels= or splits="):
        db.annotate("d")


def test_0004_rehashes_labelled_datasets_and_back(db):
    db.add_dataset("plain", TEXTS)
    db.add_dataset("labelled", TEXTS, labels=LABELS)
    new = {d.name: d.content_hash for d in db.datasets()}
    assert new["plain"] == new["labelled"]
    migrate.downgrade(db.catalog.engine, "0003")
    with db.catalog.connect() as conn:
        old = dict(conn.execute(sa.text("SELECT name, content_hash FROM dataset")).all())
    assert old["plain"] == new["plain"] and old["labelled"] != new["labelled"]  # the old formula
    migrate.upgrade(db.catalog.engine)
    with db.catalog.connect() as conn:
        assert dict(conn.execute(sa.text("SELECT name, content_hash FROM dataset")).all()) == new
