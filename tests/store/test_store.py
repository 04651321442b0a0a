"""Store conformance: every test runs against DuckDB and the real PostgreSQL server."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

import actdb
from actdb.errors import (
    AlreadyExists,
    DtypeOverflow,
    InvalidInput,
    NonFinite,
    NotAStore,
    NotFound,
    ReadOnly,
)

TEXTS = ["the cat sat", "on the mat", "a dog barked loudly"]


def tokens_for(n_tokens: list[int]) -> dict[str, list[int]]:
    ex, pos = [], []
    for e, k in enumerate(n_tokens):
        ex += [e] * k
        pos += list(range(k))
    return {"example": ex, "position": pos, "token_id": [100 + i for i in range(len(ex))]}


def rep_rows(db: actdb.Database) -> list[tuple]:
    with db.catalog.connect() as conn:
        return conn.execute(sa.text("SELECT id, status FROM rep ORDER BY id")).all()


def test_open_creates_and_reopens(tmp_path, catalog_url):
    path = tmp_path / "s"
    db = actdb.open(str(path), catalog_url=catalog_url)
    db.add_dataset("d", TEXTS)
    db.close()
    again = actdb.open(str(path))  # the catalog URL is remembered in the store
    assert [d.name for d in again.datasets()] == ["d"]
    assert again.schema_revision() == db.schema_revision()


def test_not_a_store(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(NotAStore, match="not an actdb store"):
        actdb.open(str(tmp_path / "junk"))
    with pytest.raises(NotAStore, match="actdb init"):
        actdb.open(str(tmp_path / "missing"), read_only=True)


def test_dataset_is_content_addressed(db):
    a = db.add_dataset("d", TEXTS, labels=["x", "y", "x"])
    assert db.add_dataset("d", TEXTS, labels=["x", "y", "x"]) == a  # idempotent
    assert a.content_hash.startswith("sha256:") and a.n_examples == 3
    with pytest.raises(AlreadyExists, match="other contents"):
        db.add_dataset("d", TEXTS[:2])
    assert db.texts("d") == TEXTS
    assert db.examples("d").column("label").to_pylist() == ["x", "y", "x"]
    # same texts under another name hash the same: stores can compare across projects
    assert db.add_dataset("d2", TEXTS, labels=["x", "y", "x"]).content_hash == a.content_hash


@pytest.mark.parametrize("bad, message", [
    ("", "must not be empty"), ("a\x00b", "control characters"), ("a\nb", "control characters"),
    ("x" * 10_000, "longer than 200"), ("../etc", "must not contain '/'"), (" pad", "leading or trailing"),
])
def test_bad_names_are_refused(db, bad, message):
    with pytest.raises(InvalidInput, match=message):
        db.add_dataset(bad, TEXTS)
    assert db.datasets() == []


def test_model_names_may_be_hub_ids_but_not_paths(db):
    assert db.add_model("EleutherAI/pythia-70m").name == "EleutherAI/pythia-70m"
    with pytest.raises(InvalidInput, match="looks like a path"):
        db.add_model("../../etc/passwd")


def test_empty_dataset_is_refused(db):
    with pytest.raises(InvalidInput, match="no texts"):
        db.add_dataset("d", [])


@pytest.mark.parametrize("stored, in_dtype, tol", [
    ("float16", np.float32, 1e-3), ("float32", np.float64, 0.0), ("bfloat16", np.float32, 1e-2),
    ("float16", np.float16, 0.0),
])
def test_round_trip_dtypes(db, stored, in_dtype, tol):
    db.add_dataset("d", TEXTS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 17)).astype(in_dtype)
    info = db.write_rep("m", "final", "d", "hidden.1", x, pooling="mean", dtype=stored)
    assert (info.n_rows, info.dim, info.dtype, info.layer, info.status) == (3, 17, stored, 1, "complete")
    back = db.read_rep(info.id).to_numpy()
    assert back.shape == (3, 17) and back.dtype == (np.float16 if stored == "float16" else np.float32)
    np.testing.assert_allclose(back.astype(np.float32), x.astype(np.float32), rtol=tol, atol=tol)


def test_torch_input_including_bfloat16(db):
    torch = pytest.importorskip("torch")
    db.add_dataset("d", TEXTS)
    t = torch.randn(3, 8, dtype=torch.bfloat16)
    info = db.write_rep("m", "final", "d", "hidden.2", t, pooling="mean", dtype="bfloat16")
    np.testing.assert_array_equal(db.read_rep(info.id).to_numpy(), t.float().numpy())


def test_token_level_rep_needs_and_checks_its_token_table(db):
    db.add_dataset("d", TEXTS)
    x = np.ones((9, 4), np.float32)
    with pytest.raises(InvalidInput, match="needs its token table"):
        db.write_rep("m", "final", "d", "hidden.0", x)
    with pytest.raises(InvalidInput, match="has 9 rows but the token/example table has 8"):
        db.write_rep("m", "final", "d", "hidden.0", x, tokens=tokens_for([3, 2, 3]), tokenizer="tk")
    info = db.write_rep("m", "final", "d", "hidden.0", x, tokens=tokens_for([3, 3, 3]), tokenizer="tk")
    assert info.tokenizer == "tk" and info.n_rows == 9
    # a second site reuses the stored token table by tokenizer name
    info2 = db.write_rep("m", "final", "d", "hidden.1", x * 2, tokenizer="tk")
    assert info2.tokenization_id == info.tokenization_id
    table = db.token_table(info.tokenization_id)
    assert table.column("example").to_pylist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_bad_token_tables(db):
    db.add_dataset("d", TEXTS)
    x = np.ones((3, 2), np.float32)
    with pytest.raises(InvalidInput, match="lacks column"):
        db.write_rep("m", "c", "d", "hidden.0", x, tokens={"example": [0, 1, 2]}, tokenizer="t")
    with pytest.raises(InvalidInput, match="outside the dataset"):
        db.write_rep("m", "c", "d", "hidden.0", x, tokens={"example": [0, 1, 5], "position": [0, 0, 0],
                                                           "token_id": [1, 2, 3]}, tokenizer="t")
    with pytest.raises(InvalidInput, match="grouped by example"):
        db.write_rep("m", "c", "d", "hidden.0", x, tokens={"example": [1, 0, 2], "position": [0, 0, 0],
                                                           "token_id": [1, 2, 3]}, tokenizer="t")
    assert rep_rows(db) == []


def test_nonfinite_is_refused_with_location(db):
    db.add_dataset("d", TEXTS)
    x = np.zeros((3, 4), np.float32)
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    with pytest.raises(NonFinite, match=r"2 NaN/Inf values \(first at row 1, column 2"):
        db.write_rep("m", "c", "d", "hidden.3", x, pooling="mean")
    assert rep_rows(db) == []
    info = db.write_rep("m", "c", "d", "hidden.3", x, pooling="mean", allow_nonfinite=True, dtype="float32")
    back = db.read_rep(info.id).to_numpy()
    assert np.isnan(back[1, 2]) and np.isinf(back[2, 0])
    assert db.rep_meta(info.id)["n_nonfinite"] == 2


def test_float16_overflow_names_site_and_suggests_dtype(db):
    db.add_dataset("d", TEXTS)
    x = np.zeros((3, 4), np.float32)
    x[0, 0] = 1e6
    with pytest.raises(DtypeOverflow, match=r"site 'hidden.4' reach \|x\| = 1e\+06.*dtype='float32'"):
        db.write_rep("m", "c", "d", "hidden.4", x, pooling="mean")
    assert rep_rows(db) == []
    assert db.write_rep("m", "c", "d", "hidden.4", x, pooling="mean", dtype="float32").dtype == "float32"


def test_wrong_rank_dtype_and_empty_arrays(db):
    db.add_dataset("d", TEXTS)
    with pytest.raises(InvalidInput, match="must be 2-D"):
        db.write_rep("m", "c", "d", "hidden.1", np.zeros((3, 2, 2), np.float32), pooling="mean")
    with pytest.raises(InvalidInput, match="must be floating point"):
        db.write_rep("m", "c", "d", "hidden.1", np.zeros((3, 2), np.int64), pooling="mean")
    with pytest.raises(InvalidInput, match="is empty"):
        db.write_rep("m", "c", "d", "hidden.1", np.zeros((3, 0), np.float32), pooling="mean")
    with pytest.raises(InvalidInput, match="site"):
        db.write_rep("m", "c", "d", "../x", np.zeros((3, 2), np.float32), pooling="mean")
    assert rep_rows(db) == []


def test_complete_reps_are_immutable_unless_overwritten(db, tmp_path):
    db.add_dataset("d", TEXTS)
    first = db.write_rep("m", "c", "d", "hidden.1", np.ones((3, 4)), pooling="mean")
    with pytest.raises(AlreadyExists, match="overwrite=True"):
        db.write_rep("m", "c", "d", "hidden.1", np.zeros((3, 4)), pooling="mean")
    second = db.write_rep("m", "c", "d", "hidden.1", np.full((3, 4), 2.0), pooling="mean", overwrite=True)
    assert second.id != first.id
    found = db.find_reps(model="m", site="hidden.1")
    assert [r.id for r in found] == [second.id]
    assert np.all(db.read_rep(second.id).to_numpy() == 2.0)
    assert not (db.path / "arrays" / first.path).exists()
    assert db.sql("SELECT count(*) AS n FROM reps").column("n").to_pylist() == [1]


def test_unknown_names_suggest_close_matches(db):
    db.add_dataset("sentences", TEXTS)
    db.add_model("pythia-70m")
    with pytest.raises(NotFound, match="did you mean 'sentences'"):
        db.dataset("sentence")
    with pytest.raises(NotFound, match="did you mean 'pythia-70m'"):
        db.model("pythia-70")
    with pytest.raises(KeyError):  # leaves also inherit the builtin
        db.rep(999)


def test_duplicate_checkpoints_are_reported(db):
    db.add_checkpoint("m", "step100", step=100, weights_hash="sha256:aa")
    db.add_checkpoint("m", "step200", step=200, weights_hash="sha256:bb")
    db.add_checkpoint("m", "step300", step=300, weights_hash="sha256:aa")
    dups = db.duplicate_checkpoints()
    assert [(c.name, c.duplicate_of) for c in dups] == [("step300", "step100")]
    with pytest.raises(AlreadyExists, match="weights"):
        db.add_checkpoint("m", "step100", weights_hash="sha256:cc")
    assert [c.step for c in db.checkpoints("m")] == [100, 200, 300]


def test_lazy_reads_touch_only_needed_chunks(db, monkeypatch):
    from actdb.store import arrays

    monkeypatch.setattr(arrays, "CHUNK_BYTES", 64 * 2)  # 64 rows of dim 1 float16 a chunk
    texts = [f"text {i}" for i in range(1000)]
    db.add_dataset("big", texts)
    x = np.arange(1000, dtype=np.float32)[:, None]
    info = db.write_rep("m", "c", "big", "hidden.1", x, pooling="mean")
    assert info.chunk_rows == 64  # a power of two that fits
    handle = db.read_rep(info.id)
    assert handle.chunks_read == 0  # opening reads nothing
    np.testing.assert_array_equal(handle[130:140][:, 0], np.arange(130, 140))
    assert handle.chunks_read == 1
    np.testing.assert_array_equal(handle.rows(np.array([999, 0, 500]))[:, 0], [999, 0, 500])


def test_views_are_flat_and_only_show_complete_reps(db):
    db.add_dataset("d", TEXTS)
    info = db.write_rep("m", "c", "d", "hidden.1", np.ones((3, 4)), pooling="mean")
    writer = db.rep_writer("m", "c", "d", "hidden.2", n_rows=3, dim=4, pooling="mean")
    writer.append(np.ones((1, 4)))  # not complete: invisible
    reps = db.sql("SELECT rep_id, model, checkpoint, dataset, site, layer FROM reps").to_pylist()
    assert reps == [{"rep_id": info.id, "model": "m", "checkpoint": "c", "dataset": "d", "site": "hidden.1",
                     "layer": 1}]
    for view in ("models", "checkpoints", "datasets", "examples", "tokens", "results", "dissimilarities"):
        db.sql(f"SELECT * FROM {view} LIMIT 1")


def test_read_only_handles_refuse_writes(db, tmp_path):
    db.add_dataset("d", TEXTS)
    ro = actdb.open(str(db.path), read_only=True)
    assert [d.name for d in ro.datasets()] == ["d"]
    with pytest.raises(ReadOnly, match="read-only"):
        ro.add_dataset("e", TEXTS)


def test_verify_finds_and_repairs(db):
    db.add_dataset("d", TEXTS)
    good = db.write_rep("m", "c", "d", "hidden.1", np.ones((3, 4)), pooling="mean")
    bad = db.write_rep("m", "c", "d", "hidden.2", np.ones((3, 4)), pooling="mean")
    leftover = db.rep_writer("m", "c", "d", "hidden.3", n_rows=3, dim=4, pooling="mean")
    leftover.append(np.ones((1, 4)))
    (db.path / "arrays" / "reps" / "999999999").mkdir(parents=True)  # an orphan
    shard = next((db.path / "arrays" / bad.path).rglob("c/*/*"))
    shard.write_bytes(shard.read_bytes()[:-5] + b"xxxxx")
    report = db.verify()
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["corrupt", "leftover", "orphan"] and not report.clean
    assert any(f"rep {bad.id}" in p.message for p in report.problems if p.kind == "corrupt")
    repaired = db.verify(repair=True)
    assert repaired.clean and len(repaired.repaired) == 3
    assert (db.path / "quarantine" / f"rep-{bad.id}").exists()
    assert [r.id for r in db.find_reps()] == [good.id]
    np.testing.assert_array_equal(db.read_rep(good.id).to_numpy(), np.ones((3, 4)))
