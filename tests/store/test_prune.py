"""Pruning a store (db.rm, db.clear_cache, db.du) on every catalog backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import actdb
from actdb.errors import AlreadyExists, InvalidInput, NotFound, ReadOnly
from actdb.store import arrays as A
from actdb.store import schema as S

N, D = 300, 4  # enough rows that procrustes takes the moments route (and caches per-rep moments)


def _count(db: actdb.Database, table: sa.Table, *where: object) -> int:
    with db.catalog.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def _array_dir(db: actdb.Database, rep_id: int) -> Path:
    return Path(db.arrays_location) / A.rep_path(rep_id)


@pytest.fixture
def filled(db: actdb.Database) -> actdb.Database:
    """Models a and b, checkpoints s1 and final, sites hidden.0/hidden.1 over dataset ds; every
    pair compared with procrustes (results and per-rep moments cached)."""
    db.add_dataset("ds", [f"text {i}" for i in range(N)])
    rng = np.random.default_rng(0)
    for model in ("a", "b"):
        for ckpt, step in (("s1", 1), ("final", 2)):
            db.add_checkpoint(model, ckpt, step=step)
            for layer in range(2):
                db.write_rep(model, ckpt, "ds", f"hidden.{layer}", rng.standard_normal((N, D)).astype("float32"),
                             pooling="mean")
    db.reps().compare(measure="procrustes").compute()
    assert _count(db, S.result) == 36 and _count(db, S.rep_moments) == 8
    return db


def _ids(db: actdb.Database, **filters: str) -> set[int]:
    return {r.id for r in db.find_reps(**filters)}


def _refs(db: actdb.Database, ids: set[int]) -> tuple[int, int]:
    return (_count(db, S.result, sa.or_(S.result.c.rep_a.in_(ids), S.result.c.rep_b.in_(ids))),
            _count(db, S.rep_moments, S.rep_moments.c.rep_id.in_(ids)))


def test_plan_changes_nothing_and_counts_what_refers_to_the_reps(filled: actdb.Database) -> None:
    db = filled
    ids = _ids(db, model="a", checkpoint="s1")
    plan = db.rm(model="a", checkpoint="s1")
    assert not plan.done and {r.id for r in plan.reps} == ids
    assert (plan.results, plan.moments) == _refs(db, ids) == (15, 2)
    assert plan.moments_bytes > 0
    assert plan.rep_bytes == sum(sum(f.stat().st_size for f in _array_dir(db, i).rglob("*") if f.is_file())
                                 for i in ids) > 0
    assert plan.checkpoints == ("a/s1",) and plan.models == () and plan.datasets == ()
    assert "would delete 2 rep(s)" in plan.summary()
    assert _count(db, S.rep) == 8 and _count(db, S.result) == 36 and _count(db, S.rep_moments) == 8
    assert all(_array_dir(db, i).is_dir() for i in ids)


def test_rm_checkpoint_removes_reps_arrays_cache_rows_and_the_checkpoint(filled: actdb.Database) -> None:
    db = filled
    gone = _ids(db, model="a", checkpoint="s1")
    kept = _ids(db) - gone
    before = {r["result_id"]: r["value"] for r in db.sql(
        "SELECT result_id, value FROM results WHERE rep_a NOT IN ({0}) AND rep_b NOT IN ({0})".format(
            ",".join(map(str, gone)))).to_pylist()}
    done = db.rm(model="a", checkpoint="s1", yes=True)
    assert done.done and {r.id for r in done.reps} == gone
    assert (done.results, done.moments) == (15, 2) and done.checkpoints == ("a/s1",)
    assert _ids(db) == kept and _refs(db, gone) == (0, 0)
    assert not any(_array_dir(db, i).exists() for i in gone)
    assert [c.name for c in db.checkpoints("a")] == ["final"]
    assert [m.name for m in db.models()] == ["a", "b"]  # the model keeps its other checkpoint
    after = {r["result_id"]: r["value"] for r in db.sql("SELECT result_id, value FROM results").to_pylist()}
    assert after == before  # results of the remaining reps untouched
    assert _count(db, S.rep_moments) == 6
    for rep_id in kept:  # remaining reps read back
        assert db.read_rep(rep_id).to_numpy().shape == (N, D)
    assert db.verify().clean


def test_rm_model_removes_its_checkpoints_and_the_model(filled: actdb.Database) -> None:
    db = filled
    db.add_checkpoint("a", "empty", step=9, weights_hash="sha256:old")  # a checkpoint without reps
    done = db.rm(model="a", yes=True)
    assert len(done.reps) == 4 and done.models == ("a",)
    assert sorted(done.checkpoints) == ["a/empty", "a/final", "a/s1"]
    assert [m.name for m in db.models()] == ["b"]
    assert {c.model for c in db.checkpoints()} == {"b"}
    assert db.sql("SELECT count(*) AS n FROM dissimilarities WHERE model_a = 'a' OR model_b = 'a'"
                  ).column("n").to_pylist() == [0]
    # the name is free again: new weights under it are accepted
    db.add_checkpoint("a", "empty", step=9, weights_hash="sha256:new")
    assert db.verify().clean


def test_rm_frees_a_checkpoint_name_for_new_weights(db: actdb.Database) -> None:
    db.add_checkpoint("m", "final", weights_hash="sha256:one")
    with pytest.raises(AlreadyExists, match="actdb rm"):
        db.add_checkpoint("m", "final", weights_hash="sha256:two")
    assert db.rm(model="m", checkpoint="final", yes=True).checkpoints == ("m/final",)
    assert db.add_checkpoint("m", "final", weights_hash="sha256:two").weights_hash == "sha256:two"


def test_rm_dataset_removes_reps_texts_and_token_tables(db: actdb.Database) -> None:
    db.add_dataset("keep", ["x y", "z"])
    db.add_dataset("drop", ["a b", "c d e"])
    tokens = {"example": [0, 0, 1, 1, 1], "position": [0, 1, 0, 1, 2], "token_id": [1, 2, 3, 4, 5]}
    for name in ("keep", "drop"):
        db.add_tokenization(name, "tok", tokens if name == "drop" else
                            {"example": [0, 0, 1], "position": [0, 1, 0], "token_id": [1, 2, 3]})
    db.write_rep("m", "final", "drop", "hidden.0", np.ones((5, 3), "float32"), tokenizer="tok")
    db.write_rep("m", "final", "keep", "hidden.0", np.ones((3, 3), "float32"), tokenizer="tok")
    done = db.rm(dataset="drop", yes=True)
    assert len(done.reps) == 1 and done.datasets == ("drop",) and done.checkpoints == ()
    assert [d.name for d in db.datasets()] == ["keep"]
    with pytest.raises(NotFound):
        db.dataset("drop")
    assert _count(db, S.example) == 2 and _count(db, S.token) == 3 and _count(db, S.tokenization) == 1
    assert [r.dataset for r in db.find_reps()] == ["keep"]
    db.add_dataset("drop", ["other", "texts"])  # the name is free again


def test_rm_site_glob_and_rep_ids_remove_only_those_reps(filled: actdb.Database) -> None:
    db = filled
    done = db.rm(site="hidden.1", checkpoint="s*", yes=True)
    assert sorted((r.model, r.checkpoint, r.site) for r in done.reps) == [("a", "s1", "hidden.1"),
                                                                          ("b", "s1", "hidden.1")]
    assert done.checkpoints == () and len(db.checkpoints()) == 4  # a site filter never removes checkpoints
    one = min(_ids(db))
    assert [r.id for r in db.rm(rep=one, yes=True).reps] == [one]
    assert one not in _ids(db) and len(_ids(db)) == 5
    assert db.rm(model="a", checkpoint="s1", site="hidden.1").empty  # already gone: nothing to do


@pytest.mark.parametrize(("filters", "error", "match"), [
    ({}, InvalidInput, "at least one of model, checkpoint"),
    ({"model": "aa"}, NotFound, r"no model matches 'aa'.*did you mean 'a'"),
    ({"model": "a", "checkpoint": "fnal"}, NotFound,
     r"no checkpoint of model\(s\) a matches 'fnal'.*did you mean 'final'"),
    ({"dataset": "dss"}, NotFound, r"no dataset matches 'dss'.*'ds'"),
    ({"site": "hiden.*"}, NotFound, r"no site matches 'hiden\.\*'"),
    ({"rep": 999}, NotFound, "no rep with id 999"),
    ({"rep": "x"}, InvalidInput, "rep id 'x' is not an integer"),
    ({"rep": 0}, InvalidInput, "not a positive integer"),
    ({"model": ""}, InvalidInput, "not a name or glob"),
])
def test_bad_filters_are_typed_errors_and_change_nothing(db: actdb.Database, filters: dict[str, object],
                                                         error: type[Exception], match: str) -> None:
    db.add_dataset("ds", ["one", "two"])
    for ckpt in ("s1", "final"):
        db.write_rep("a", ckpt, "ds", "hidden.0", np.ones((2, 3), "float32"), pooling="mean")
    with pytest.raises(error, match=match):
        db.rm(**filters, yes=True)
    assert _count(db, S.rep) == 2 and len(db.checkpoints()) == 2


def test_rm_on_a_read_only_store_plans_but_refuses_to_delete(tmp_path: Path) -> None:
    db = actdb.open(str(tmp_path / "s"))
    db.add_dataset("ds", ["a", "b"])
    db.write_rep("m", "final", "ds", "hidden.0", np.ones((2, 3), "float32"), pooling="mean")
    db.close()
    ro = actdb.open(str(tmp_path / "s"), read_only=True)
    try:
        assert len(ro.rm(model="m").reps) == 1
        with pytest.raises(ReadOnly):
            ro.rm(model="m", yes=True)
    finally:
        ro.close()


def test_crash_between_catalog_and_arrays_leaves_orphans_that_verify_repair_removes(
        filled: actdb.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    db = filled
    ids = _ids(db, model="b", checkpoint="final")

    def crash(root: object, path: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(A, "delete_array", crash)
    with pytest.raises(KeyboardInterrupt):
        db.rm(model="b", checkpoint="final", yes=True)
    monkeypatch.undo()
    assert _ids(db) & ids == set() and all(_array_dir(db, i).is_dir() for i in ids)
    report = db.verify()
    messages = sorted(p.message for p in report.problems)
    # the crash came before any file went: the reps' arrays and their cached moments' groups
    assert [m for m in messages if m.startswith("array ")] == [f"array {A.rep_path(i)} belongs to no rep"
                                                              for i in sorted(ids)]
    assert len([m for m in messages if m.startswith("cached moments ")]) == 2
    assert db.verify(repair=True).clean and not any(_array_dir(db, i).exists() for i in ids)
    # the interrupted removal left the (now empty) checkpoint: running it again finishes it
    assert db.rm(model="b", checkpoint="final", yes=True).checkpoints == ("b/final",)


def test_clear_cache_all_and_by_measure(filled: actdb.Database) -> None:
    db = filled
    db.reps(model="a", checkpoint="final").compare(measure="linear_cka").compute()
    n_cka = _count(db, S.result, S.result.c.measure == "linear_cka")
    assert n_cka == 3
    cleared = db.clear_cache(measure="linear_*")
    assert (cleared.results, cleared.moments) == (3, 0) and cleared.results_bytes > 0
    assert _count(db, S.result) == 36 and _count(db, S.rep_moments) == 8
    cleared = db.clear_cache()
    assert (cleared.results, cleared.moments) == (36, 8) and cleared.moments_bytes > 0
    assert _count(db, S.result) == 0 and _count(db, S.rep_moments) == 0
    assert "cleared 36 cached result(s)" in cleared.summary()
    again = db.reps(model="a", checkpoint="final").compare(measure="procrustes").compute()
    assert again.rows and not any(r["cached"] for r in again.rows)  # recomputed, not read from a cache
    assert _count(db, S.result) > 0 and _count(db, S.rep_moments) == 2


def test_du_groups_array_bytes_and_reports_catalog_and_caches(filled: actdb.Database) -> None:
    db = filled
    rows = db.du()
    arrays = [r for r in rows if r["what"] == "arrays"]
    assert [(r["model"], r["checkpoint"], r["count"]) for r in arrays] == [
        ("a", "s1", 2), ("a", "final", 2), ("b", "s1", 2), ("b", "final", 2)]
    on_disk = sum(f.stat().st_size for d in (Path(db.arrays_location) / "reps").iterdir() if d.is_dir()
                  for f in d.rglob("*") if f.is_file())
    assert sum(r["bytes"] for r in arrays) == on_disk
    by_kind = {r["what"]: r for r in rows}
    assert by_kind["catalog"]["bytes"] > 0
    assert by_kind["cache: results"]["count"] == 36 and by_kind["cache: results"]["bytes"] > 0
    assert by_kind["cache: moments"]["count"] == 8 and by_kind["cache: moments"]["bytes"] > 0
    moments_on_disk = sum(f.stat().st_size for g in (Path(db.arrays_location) / "moments").iterdir() if g.is_dir()
                          for f in g.rglob("*") if f.is_file())
    assert by_kind["cache: moments"]["bytes"] == moments_on_disk > 0  # the groups beside the arrays
    assert by_kind["total"]["bytes"] == on_disk + by_kind["catalog"]["bytes"] + moments_on_disk
    sites = [r for r in db.du(by="site") if r["what"] == "arrays"]
    assert len(sites) == 8 and all(r["site"] in ("hidden.0", "hidden.1") for r in sites)
    models = [r for r in db.du(by="model") if r["what"] == "arrays"]
    assert [(r["model"], r["checkpoint"], r["count"]) for r in models] == [("a", None, 4), ("b", None, 4)]
    db.rm(model="a", yes=True)
    assert sum(r["bytes"] for r in db.du() if r["what"] == "arrays") == sum(r["bytes"] for r in models[1:])
    with pytest.raises(InvalidInput, match="cannot group disk usage by 'layer'"):
        db.du(by="layer")


def test_rm_removes_a_quarantined_rep_and_its_quarantine_folder(duck: actdb.Database) -> None:
    from actdb.store.verify import _quarantine

    duck.add_dataset("ds", ["a", "b"])
    rep = duck.write_rep("m", "final", "ds", "hidden.0", np.ones((2, 3), "float32"), pooling="mean")
    with duck.catalog.connect() as conn:
        row = conn.execute(sa.select(S.rep).where(S.rep.c.id == rep.id)).mappings().one()
    _quarantine(duck, row)  # what verify --repair does to a rep whose checksum fails
    folder = duck.path / "quarantine" / f"rep-{rep.id}"
    assert folder.is_dir() and not _array_dir(duck, rep.id).exists()
    done = duck.rm(rep=rep.id, yes=True)
    assert [(r.id, r.status) for r in done.reps] == [(rep.id, "corrupt")]
    assert not folder.exists() and _count(duck, S.rep) == 0


def _moment_groups(db: actdb.Database) -> set[str]:
    folder = Path(db.arrays_location) / "moments"
    return {p.name for p in folder.iterdir() if p.name != "zarr.json"} if folder.is_dir() else set()


def _moment_ids(db: actdb.Database, *where: object) -> set[str]:
    with db.catalog.connect() as conn:
        return {f"{i:09d}" for i in conn.execute(sa.select(S.rep_moments.c.id).where(*where)).scalars()}


def test_rm_and_clear_cache_delete_the_moment_groups_beside_the_arrays(filled: actdb.Database) -> None:
    db = filled
    assert _moment_groups(db) == _moment_ids(db) and len(_moment_groups(db)) == 8
    ids = _ids(db, model="a", checkpoint="s1")
    theirs = _moment_ids(db, S.rep_moments.c.rep_id.in_(ids))
    assert len(theirs) == 2
    db.rm(model="a", checkpoint="s1", yes=True)
    assert _moment_groups(db) == _moment_ids(db) and not (theirs & _moment_groups(db))
    assert len(_moment_groups(db)) == 6
    cleared = db.clear_cache()
    assert cleared.moments == 6 and _moment_groups(db) == set() and _moment_ids(db) == set()
    assert next(r for r in db.du() if r["what"] == "cache: moments")["bytes"] == 0
    assert db.verify().clean


def test_verify_repair_removes_orphan_moment_groups(filled: actdb.Database) -> None:
    db = filled
    (victim,) = sorted(_moment_ids(db))[:1]
    with db.catalog.connect(write=True) as conn:  # a row gone, its group left (an interrupted removal)
        conn.execute(S.rep_moments.delete().where(S.rep_moments.c.id == int(victim)))
    stray = Path(db.arrays_location) / "moments" / "notes.txt"
    stray.write_text("not ours")
    problems = sorted(p.message for p in db.verify().problems)
    assert problems == ["'moments/notes.txt' in the array root is not a moments group actdb writes; left untouched",
                        f"cached moments moments/{victim} belong to no rep_moments row"]
    db.verify(repair=True)
    assert victim not in _moment_groups(db) and stray.exists() and len(_moment_groups(db)) == 8
