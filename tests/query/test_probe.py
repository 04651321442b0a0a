"""Selection.probe: cross-validated linear probes per rep (actdb.query.probe, probe_ridge)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold

import actdb
from actdb.errors import InvalidInput
from actdb.query import probe as probe_mod
from actdb.store import arrays

N_EX, TOK, DIM = 60, 5, 16
CLASSES = ("a", "b", "c")
LABELS = [CLASSES[(i * 7) % 3] for i in range(N_EX)]


def _values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat([CLASSES.index(v) for v in LABELS], TOK)
    noise = rng.standard_normal((N_EX * TOK, DIM))
    means = rng.standard_normal((3, DIM)) * 3.0
    return {"hidden.0": noise.astype(np.float32),  # the label is not in it
            "hidden.1": (rng.standard_normal((N_EX * TOK, DIM)) + means[y]).astype(np.float32)}


@pytest.fixture
def pdb(db, monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 32 * DIM * 4)  # 32-row chunks
    monkeypatch.setattr(probe_mod, "BLOCK_BYTES", 64 * DIM * 8)  # 64-row blocks: folds cross blocks
    db.add_dataset("d", [f"text {i}" for i in range(N_EX)], labels=LABELS)
    tokens = {"example": np.repeat(np.arange(N_EX), TOK), "position": np.tile(np.arange(TOK), N_EX),
              "token_id": np.tile(np.arange(TOK), N_EX)}
    values = _values()
    with db.session():
        db.add_checkpoint("m", "final", step=100)
        for layer, site in enumerate(values):
            db.write_rep("m", "final", "d", site, values[site], tokens=tokens, tokenizer="tok", dtype="float32",
                         layer=layer)
    return db, values


def _sklearn_ridge(x: np.ndarray, ridge: float, folds: int) -> tuple[float, list[np.ndarray]]:
    """Accuracy of sklearn's Ridge on one-hot labels, folds of examples as KFold cuts them."""
    y = np.repeat([CLASSES.index(v) for v in LABELS], TOK)
    ex = np.repeat(np.arange(N_EX), TOK)
    onehot = np.eye(3)[y]
    correct, scores = 0, []
    x = x.astype(np.float64)
    for train_ex, test_ex in KFold(folds).split(np.arange(N_EX)):
        train, test = np.isin(ex, train_ex), np.isin(ex, test_ex)
        xc = x[train] - x[train].mean(0)
        alpha = ridge * np.trace(xc.T @ xc) / DIM
        model = Ridge(alpha=alpha).fit(x[train], onehot[train])
        s = model.predict(x[test])
        scores.append(s)
        correct += int((s.argmax(1) == y[test]).sum())
    return correct / len(y), scores


def test_ridge_probe_finds_the_decodable_layer_and_matches_sklearn(pdb):
    db, values = pdb
    out = db.reps(model="m").probe(label="label")
    assert list(out.columns) == list(probe_mod.COLUMNS)
    by_site = out.set_index("site")
    assert by_site.loc["hidden.1", "accuracy"] == 1.0
    assert by_site.loc["hidden.0", "accuracy"] < 0.5  # chance is 1/3
    assert (out["n"] == N_EX * TOK).all() and (out["folds"] == 5).all() and not out["cached"].any()
    assert out["r2"].isna().all()  # the classes are not numbers
    for site in values:
        expected, _ = _sklearn_ridge(values[site], 1e-3, 5)
        assert by_site.loc[site, "accuracy"] == expected
    # a strong penalty changes the held-out accuracy the same way in both
    strong = db.reps(site="hidden.0").probe(ridge=10.0, folds=3)
    assert strong["accuracy"].iloc[0] == _sklearn_ridge(values["hidden.0"], 10.0, 3)[0]


def test_ridge_fit_from_moments_matches_sklearn_scores(pdb):
    db, values = pdb
    from actdb.query.probe_ridge import ridge_probe
    from actdb.query.rows import build_sources

    sel = db.reps(site="hidden.0")
    storage, record = sel.storage, sel.resolve()[0]
    inputs = probe_mod._inputs(storage, record, probe_mod.check_params("label", "ridge", 4), {})
    source = build_sources(storage, inputs.space, [record])[record.key]
    fold_of_row = probe_mod.assign_folds(np.repeat(np.arange(N_EX), TOK), 4)
    fits = ridge_probe(source, inputs.codes, 3, fold_of_row, 4, ridge=1e-3, block_rows=64).fits
    _, scores = _sklearn_ridge(values["hidden.0"], 1e-3, 4)
    x = values["hidden.0"].astype(np.float64)
    for f, fit in enumerate(fits):
        np.testing.assert_allclose(x[fold_of_row == f] @ fit.weights + fit.intercept, scores[f], atol=1e-8)


def test_logistic_probe_matches_sklearn_on_the_same_sample_and_folds(pdb):
    db, values = pdb
    out = db.reps(site="hidden.1").probe(method="logistic", folds=3, sample=200, seed=1)
    n = N_EX * TOK
    positions = np.sort(np.random.default_rng(1).choice(n, size=200, replace=False))
    y = np.repeat([CLASSES.index(v) for v in LABELS], TOK)[positions]
    fold = probe_mod.assign_folds(np.repeat(np.arange(N_EX), TOK), 3)[positions]
    x = values["hidden.1"].astype(np.float64)[positions]
    correct = 0
    for f in range(3):
        model = LogisticRegression(max_iter=1000).fit(x[fold != f], y[fold != f])
        correct += int((model.predict(x[fold == f]) == y[fold == f]).sum())
    assert out["accuracy"].iloc[0] == correct / 200 and out["n"].iloc[0] == 200
    assert out["method"].iloc[0] == "logistic"


def test_second_call_is_cached_without_reading_arrays(pdb, monkeypatch):
    db, _ = pdb
    first = db.reps(model="m").probe(folds=4)
    monkeypatch.setattr(arrays.RepArray, "read_stored", lambda *a, **k: pytest.fail("read an array"))
    again = db.reps(model="m").probe(folds=4)
    assert again["cached"].all()
    assert again["accuracy"].tolist() == first["accuracy"].tolist()
    # other parameters, or re-annotated labels, are other entries
    monkeypatch.undo()
    assert not db.reps(model="m").probe(folds=3)["cached"].any()
    db.annotate("d", labels=list(reversed(LABELS)))
    assert not db.reps(model="m").probe(folds=4)["cached"].any()


def test_probes_view_in_sql(pdb):
    db, _ = pdb
    db.reps(model="m").probe(folds=4)
    db.reps(site="hidden.1").probe(method="logistic", folds=3, sample=100)
    rows = db.sql("SELECT model, checkpoint, step, site, layer, dataset, label, method, accuracy, n, folds "
                  "FROM probes ORDER BY method, layer").to_pylist()
    assert [(r["method"], r["site"], r["layer"], r["folds"], r["label"]) for r in rows] == [
        ("logistic", "hidden.1", 1, 3, "label"), ("ridge", "hidden.0", 0, 4, "label"),
        ("ridge", "hidden.1", 1, 4, "label")]
    assert rows[2]["accuracy"] == 1.0 and rows[2]["n"] == N_EX * TOK and rows[0]["n"] == 100
    assert rows[0]["model"] == "m" and rows[0]["checkpoint"] == "final" and rows[0]["step"] == 100
    assert rows[0]["dataset"] == "d"


def test_bad_inputs_say_what_to_change(pdb):
    db, _ = pdb
    sel = db.reps(model="m")
    with pytest.raises(InvalidInput, match=r"topic.*label, split"):
        sel.probe(label="topic")
    with pytest.raises(InvalidInput, match=r"method 'svm' is unknown.*ridge, logistic"):
        sel.probe(method="svm")
    with pytest.raises(InvalidInput, match="folds must be an integer >= 2"):
        sel.probe(folds=1)
    with pytest.raises(InvalidInput, match=r"60 example.*folds=61.*use folds <= 60"):
        sel.probe(folds=N_EX + 1)
    with pytest.raises(InvalidInput, match=r"'split'.*60 examples.*have none"):
        sel.probe(label="split")  # all missing
    db.annotate("d", splits=["train"] * N_EX)
    with pytest.raises(InvalidInput, match="one class"):
        sel.probe(label="split")
    with pytest.raises(InvalidInput, match="matches no reps"):
        db.reps(model="nope").probe()
    with pytest.raises(InvalidInput, match="ridge must be"):
        sel.probe(ridge=-1.0)


def test_logistic_without_sklearn_names_the_extra(pdb, monkeypatch):
    import builtins

    db, _ = pdb
    real = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(InvalidInput, match=r"pip install 'actdb\[probe\]'"):
        db.reps(site="hidden.1").probe(method="logistic")


def test_example_level_reps_and_shuffled_folds(tmp_path):
    db = actdb.open(str(tmp_path / "e"))
    rng = np.random.default_rng(3)
    y = np.array([CLASSES.index(v) for v in LABELS])
    db.add_dataset("d", [f"t{i}" for i in range(N_EX)], labels=LABELS)
    db.write_rep("m", "final", "d", "hidden.0", rng.standard_normal((N_EX, DIM)) + 8 * np.eye(DIM)[y],
                 pooling="mean", dtype="float32")
    out = db.reps().probe(shuffle=True, seed=2, folds=3)
    assert out["accuracy"].iloc[0] == 1.0 and out["n"].iloc[0] == N_EX
    folds = probe_mod.assign_folds(np.arange(N_EX), 3, shuffle=True, seed=2)
    assert sorted(np.bincount(folds).tolist()) == [20, 20, 20]
    assert folds.tolist() != sorted(folds.tolist())


def test_readme_probe_example_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    python = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    sql = [b for b in re.findall(r"```sql\n(.*?)```", readme, flags=re.S) if "FROM probes" in b]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(python[0], "README.md", "exec"), scope)  # the quickstart (our own README)
    exec(compile(next(b for b in python if ".probe(" in b), "README.md", "exec"), scope)
    probes = scope["probes"]
    assert len(probes) == 6 and set(probes["layer"]) == {0, 1, 2} and not probes["cached"].any()
    rows = scope["db"].sql(sql[0].strip().rstrip(";")).to_pylist()
    assert [(r["layer"], r["step"]) for r in rows] == [(0, 100), (0, 1000), (1, 100), (1, 1000), (2, 100), (2, 1000)]


def test_numeric_labels_also_give_a_held_out_r2_as_sklearn(tmp_path):
    db = actdb.open(str(tmp_path / "r"))
    rng = np.random.default_rng(5)
    t = rng.integers(0, 4, N_EX).astype(np.float64)
    db.add_dataset("d", [f"t{i}" for i in range(N_EX)], labels=[str(int(v)) for v in t])
    x = rng.standard_normal((N_EX, DIM)) + np.outer(t, rng.standard_normal(DIM))
    db.write_rep("m", "final", "d", "hidden.0", x, pooling="mean", dtype="float32")
    out = db.reps().probe(folds=4)
    x = x.astype(np.float32).astype(np.float64)
    predicted = np.empty(N_EX)
    for train, test in KFold(4).split(x):
        xc = x[train] - x[train].mean(0)
        predicted[test] = Ridge(alpha=1e-3 * np.trace(xc.T @ xc) / DIM).fit(x[train], t[train]).predict(x[test])
    want = 1 - np.sum((t - predicted) ** 2) / np.sum((t - t.mean()) ** 2)
    assert out["r2"].iloc[0] == pytest.approx(want, abs=1e-9) and 0.5 < want < 1
    again = db.reps().probe(folds=4)
    assert again["cached"].iloc[0] and again["r2"].iloc[0] == out["r2"].iloc[0]
    assert db.sql("SELECT r2 FROM probes").to_pylist()[0]["r2"] == out["r2"].iloc[0]
