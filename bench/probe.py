"""Probe benchmark: ``Selection.probe`` over 7 layers x 8 checkpoints against the per-layer
scikit-learn loop a user writes today over the same arrays (read with ``to_numpy``, one
``Ridge`` per fold on the one-hot labels, the same folds of examples and the same penalty).

Reported: the wall time of each (the probe plan computing, then the same plan cached), and the
largest difference of accuracy between them (target: 0, ridge to 1e-8 on the scores, so the
accuracies agree exactly). The label is made linearly decodable from a layer that grows with
training, so the table of accuracies is the "when and where" figure of the README.

    python bench/probe.py            # 56 reps of 12,800 token rows x 128 (float16)
    python bench/probe.py --tiny     # every code path once, in seconds (CI)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import actdb

# bench/http.py would shadow the standard library's http: the folder goes last on the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).parent))

from _common import markdown_table  # noqa: E402

LAYERS, CHECKPOINTS, FOLDS, RIDGE = 7, 8, 5, 1e-3


def build(path: Path, n_ex: int, tok: int, dim: int) -> tuple[actdb.Database, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, n_ex)
    db = actdb.open(str(path))
    db.add_dataset("d", [f"text {i}" for i in range(n_ex)], labels=[f"c{v}" for v in labels])
    tokens = {"example": np.repeat(np.arange(n_ex), tok), "position": np.tile(np.arange(tok), n_ex),
              "token_id": np.tile(np.arange(tok), n_ex)}
    y = np.repeat(labels, tok)
    means = rng.standard_normal((4, dim))
    with db.session():
        for c in range(CHECKPOINTS):
            step = 2 ** (c + 4)
            db.add_checkpoint("m", f"step{step}", step=step)
            for layer in range(LAYERS):
                signal = max(0.0, (c - 2) / CHECKPOINTS) * layer / LAYERS  # later and deeper: decodable
                x = rng.standard_normal((n_ex * tok, dim)) + 2.0 * signal * means[y]
                db.write_rep("m", f"step{step}", "d", f"hidden.{layer}", x, tokens=tokens, tokenizer="tok",
                             layer=layer)
    return db, y


def sklearn_loop(db: actdb.Database, y: np.ndarray, n_ex: int, tok: int) -> dict[int, float]:
    """What a user writes: each rep to numpy, KFold over examples, Ridge on one-hot labels."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    ex = np.repeat(np.arange(n_ex), tok)
    onehot = np.eye(int(y.max()) + 1)[y]
    out = {}
    for handle in db.reps(model="m"):
        x = handle.to_numpy().astype(np.float64)
        correct = 0
        for train_ex, test_ex in KFold(FOLDS).split(np.arange(n_ex)):
            train, test = np.isin(ex, train_ex), np.isin(ex, test_ex)
            xc = x[train] - x[train].mean(0)
            alpha = RIDGE * float(np.einsum("ij,ij->", xc, xc)) / x.shape[1]
            scores = Ridge(alpha=alpha).fit(x[train], onehot[train]).predict(x[test])
            correct += int((scores.argmax(1) == y[test]).sum())
        out[handle.rep_id] = correct / len(y)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a small store: every code path once")
    args = ap.parse_args()
    n_ex, tok, dim = (40, 4, 16) if args.tiny else (800, 16, 128)
    with tempfile.TemporaryDirectory() as tmp:
        db, y = build(Path(tmp) / "s", n_ex, tok, dim)
        t0 = time.perf_counter()
        found = db.reps(model="m").probe(label="label", folds=FOLDS, ridge=RIDGE)
        t_probe = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached = db.reps(model="m").probe(label="label", folds=FOLDS, ridge=RIDGE)
        t_cached = time.perf_counter() - t0
        t0 = time.perf_counter()
        loop = sklearn_loop(db, y, n_ex, tok)
        t_loop = time.perf_counter() - t0
        diff = max(abs(a - loop[r]) for r, a in zip(found["rep_id"], found["accuracy"]))
        print(f"# {LAYERS} layers x {CHECKPOINTS} checkpoints, {n_ex * tok:,} rows x {dim}, {FOLDS} folds\n")
        print(markdown_table([
            {"path": "Selection.probe (ridge, computing)", "seconds": round(t_probe, 2)},
            {"path": "Selection.probe (cached)", "seconds": round(t_cached, 3)},
            {"path": "per-layer scikit-learn loop", "seconds": round(t_loop, 2)},
        ]))
        print(f"\nlargest |accuracy difference| vs the scikit-learn loop: {diff:.3g} (target 0); "
              f"all cached on the second call: {bool(cached['cached'].all())}\n")
        table = found.pivot(index="step", columns="layer", values="accuracy").round(3)
        print(markdown_table([{"step": int(step), **{f"layer {k}": v for k, v in row.items()}}
                              for step, row in table.iterrows()]))
        db.close()
        if diff > 0:
            sys.exit(1)


if __name__ == "__main__":
    main()
