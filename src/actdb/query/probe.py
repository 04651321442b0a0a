"""Linear probes as a query: ``Selection.probe(label=..., method=..., folds=...)``.

For each rep, a linear classifier of an example column (``label`` or ``split``, mapped to
every row of the rep: all tokens of an example share its label) is cross-validated over
``folds`` folds of examples (every row of an example in the same fold; contiguous runs of
examples, or a seeded permutation with ``shuffle=True``), and its held-out accuracy reported.

- ``ridge``: from streaming moments (:mod:`actdb.query.probe_ridge`): two passes over the rows,
  memory independent of their number; the same as scikit-learn's ``Ridge(alpha=λ)`` fitted on
  the one-hot labels of each training fold, ``λ = ridge · trace(XᵀX) / d`` (centred). When
  every class name is a number, the probe also regresses that number: ``r2`` is its held-out R²
  (1 − Σ(t − t̂)² / Σ(t − t̄)² over all rows); None otherwise.
- ``logistic``: scikit-learn's ``LogisticRegression(C=C)`` on a seeded sample of ``sample``
  rows, the same folds (``pip install 'actdb[probe]'``).

Values are cached in the ``result`` table (measure ``probe:<method>``, rep_a = rep_b, params
with the label, folds and a hash of the label values, so re-annotating recomputes) and read in
SQL through the ``probes`` view.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from actdb.errors import InvalidInput
from actdb.query.loader import LABEL_COLUMNS, label_classes
from actdb.query.probe_ridge import ridge_probe
from actdb.query.rows import Source, build_sources
from actdb.query.tasks import RowSpace, params_hash, row_space
from actdb.store.records import RepRecord, ResultValue

if TYPE_CHECKING:
    import pandas as pd

    from actdb.query.storage import Storage

METHODS = ("ridge", "logistic")
COLUMNS = ("rep_id", "model", "checkpoint", "step", "site", "layer", "dataset", "label", "method", "accuracy",
           "r2", "n", "folds", "cached")
BLOCK_BYTES = 32 * 2**20  # float64 features per block of the second pass


@dataclass(frozen=True)
class ProbeParams:
    """A probe's parameters, checked."""

    label: str
    method: str
    folds: int
    ridge: float = 1e-3
    sample: int = 4096
    seed: int = 0
    shuffle: bool = False
    C: float = 1.0
    subset: str | None = None

    def stored(self, labels_hash: str) -> dict[str, Any]:
        """The parameters a value depends on (hashed into its cache key, shown in ``probes.params``)."""
        out: dict[str, Any] = {"label": self.label, "folds": self.folds, "labels": labels_hash,
                               "shuffle": self.shuffle}
        if self.shuffle or self.method == "logistic":
            out["seed"] = self.seed
        if self.method == "ridge":
            out["ridge"] = self.ridge
        else:
            out.update(sample=self.sample, C=self.C)
        return out


def _integer(name: str, value: Any, low: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidInput(f"{name} must be an integer >= {low}, not {value!r}; {fix}")
    return int(value)


def check_params(label: Any, method: Any, folds: Any, *, ridge: Any = 1e-3, sample: Any = 4096, seed: Any = 0,
                 shuffle: bool = False, C: Any = 1.0, subset: str | None = None) -> ProbeParams:
    """Validate a probe's parameters (typed errors that say what to change)."""
    if method not in METHODS:
        raise InvalidInput(f"probe method {method!r} is unknown; choose one of {', '.join(METHODS)}")
    if not isinstance(label, str) or label not in LABEL_COLUMNS:
        raise InvalidInput(f"label {label!r} is not a label column of the examples; choose one of "
                           f"{', '.join(LABEL_COLUMNS)} (set them with db.annotate(dataset, labels=[...]))")
    folds = _integer("folds", folds, 2, "cross-validation needs at least 2 folds (e.g. folds=5)")
    for name, value in (("ridge", ridge), ("C", C)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise InvalidInput(f"{name} must be a finite number >= 0, not {value!r}")
    if method == "logistic" and C <= 0:
        raise InvalidInput(f"C must be > 0 for the logistic probe, not {C!r} (smaller C: stronger penalty)")
    sample = _integer("sample", sample, folds, f"the logistic probe needs at least folds={folds} sampled rows")
    seed = _integer("seed", seed, 0, "pass a non-negative integer seed")
    if subset is not None:
        from actdb.query.rows import normalize_subset

        subset = normalize_subset(subset)
    return ProbeParams(label, str(method), folds, float(ridge), sample, seed, bool(shuffle), float(C), subset)


# ------------------------------------------------------------------------ folds
def row_examples(storage: Storage, rep: RepRecord) -> np.ndarray:
    """The example of each underlying row of ``rep`` (the identity for example-level reps)."""
    if rep.pooling != "token":
        return np.arange(rep.n_rows, dtype=np.int64)
    return np.asarray(storage.token_table(rep).column("example"), dtype=np.int64)


def assign_folds(examples: np.ndarray, folds: int, *, shuffle: bool = False, seed: int = 0,
                 what: str = "the rep") -> np.ndarray:
    """The fold of each row from its example ``(n,)``: the distinct examples (sorted, or a
    seeded permutation of them) cut into ``folds`` contiguous parts as ``np.array_split`` (and
    scikit-learn's ``KFold``) cuts them, so every row of an example shares a fold."""
    distinct = np.unique(examples)
    if len(distinct) < folds:
        raise InvalidInput(f"{what} has {len(distinct)} example(s) but folds={folds}: every fold needs an "
                           f"example; use folds <= {len(distinct)} (at least 2) or a dataset with more examples")
    order = np.random.default_rng(seed).permutation(distinct) if shuffle else distinct
    fold_of = np.empty(len(distinct), dtype=np.int64)
    for f, part in enumerate(np.array_split(order, folds)):
        fold_of[np.searchsorted(distinct, part)] = f
    return fold_of[np.searchsorted(distinct, examples)]


# ------------------------------------------------------------------------ one rep
@dataclass
class _Inputs:
    space: RowSpace
    codes: np.ndarray  # class of each underlying row
    examples: np.ndarray  # example of each underlying row
    n_classes: int
    labels_hash: str
    values: np.ndarray | None  # each class's number, when every class name is one (a numeric target)


Memo = dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, int, str, np.ndarray | None]]


def numeric_values(classes: Sequence[Any]) -> np.ndarray | None:
    """The classes as numbers ``(k,)`` float64 when every one parses as a finite number, else None."""
    try:
        values = np.array([float(c) for c in classes], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if np.isfinite(values).all() else None


def _inputs(storage: Storage, rep: RepRecord, p: ProbeParams, memo: Memo) -> _Inputs:
    """A rep's labels and examples per row (read once per dataset and token table, catalog only)."""
    key = (rep.store, rep.dataset, rep.tokenization_id if rep.pooling == "token" else None, rep.n_rows)
    if key not in memo:
        codes, classes = label_classes(storage, rep, p.label)
        digest = hashlib.sha256(codes.tobytes() + "\x00".join(map(str, classes)).encode()).hexdigest()[:16]
        memo[key] = (codes, row_examples(storage, rep), len(classes), digest, numeric_values(classes))
    codes, examples, n_classes, digest, values = memo[key]
    return _Inputs(row_space(rep, rep, p.subset, None), codes, examples, n_classes, digest, values)


def _key(rep_id: int, method: str, params: dict[str, Any], space: RowSpace) -> tuple[str, str, int, int, str]:
    return (f"probe:{method}", params_hash(params), rep_id, rep_id, space.hash)


def _block_rows(rep: RepRecord) -> int:
    fit = max(1, BLOCK_BYTES // max(1, rep.dim * 8))
    return max(rep.chunk_rows, (fit // rep.chunk_rows) * rep.chunk_rows)


def _logistic(source: Source, codes: np.ndarray, fold_of_row: np.ndarray, p: ProbeParams) -> tuple[int, int]:
    """(correct, rows) of the logistic probe over a seeded sample of the rows."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise InvalidInput("method='logistic' needs scikit-learn: pip install 'actdb[probe]' "
                           "(or use method='ridge', which needs nothing more)") from None
    n = source.n
    rng = np.random.default_rng(p.seed)
    positions = np.sort(rng.choice(n, size=min(p.sample, n), replace=False))
    x, y, fold = source.sample(positions), codes[positions], fold_of_row[positions]
    correct = 0
    for f in range(p.folds):
        test = fold == f
        if not test.any():
            continue
        train = ~test
        if len(np.unique(y[train])) < 2:
            raise InvalidInput(f"fold {f}'s training rows of the sample hold one class only; raise sample= "
                               "(or use shuffle=True so the folds mix the classes)")
        model = LogisticRegression(C=p.C, max_iter=1000).fit(x[train], y[train])
        correct += int(np.count_nonzero(model.predict(x[test]) == y[test]))
    return correct, len(positions)


def compute_one(storage: Storage, rep: RepRecord, p: ProbeParams, inputs: _Inputs) -> ResultValue:
    """Fit and cross-validate one rep's probe (reads its rows)."""
    started = time.perf_counter()
    source = build_sources(storage, inputs.space, [rep])[rep.key]
    codes = inputs.codes if source.index is None else inputs.codes[source.index]
    examples = inputs.examples if source.index is None else inputs.examples[source.index]
    fold_of_row = assign_folds(examples, p.folds, shuffle=p.shuffle, seed=p.seed, what=rep.label())
    extra: dict[str, Any] = {"classes": inputs.n_classes}
    if p.method == "ridge":
        score = ridge_probe(source, codes, inputs.n_classes, fold_of_row, p.folds, ridge=p.ridge,
                            block_rows=_block_rows(rep), values=inputs.values)
        correct, n, route = score.correct, len(codes), "moments"
        if score.sse is not None and inputs.values is not None:
            target = inputs.values[codes]
            extra["r2"] = 1.0 - score.sse / float(np.sum((target - target.mean()) ** 2))
    else:
        correct, n = _logistic(source, codes, fold_of_row, p)
        route = "sample"
    return ResultValue(value=correct / n, n=n, route=route, seconds=time.perf_counter() - started,
                       extra={"correct": correct, **extra})


# ------------------------------------------------------------------------ many reps
def probe(storage: Storage, reps: Sequence[RepRecord], p: ProbeParams, *, recompute: bool = False) -> pd.DataFrame:
    """One row per rep (``COLUMNS``): cached values where stored, the rest computed and cached."""
    import pandas as pd

    if not reps:
        raise InvalidInput("the selection matches no reps: nothing to probe; loosen its filters (db.reps(...))")
    ids = storage.result_ids(list(reps), create=False)
    memo: Memo = {}
    inputs = [_inputs(storage, rep, p, memo) for rep in reps]
    params = [p.stored(i.labels_hash) for i in inputs]
    keys = [None if rep.key not in ids else _key(ids[rep.key], p.method, kw, i.space)
            for rep, i, kw in zip(reps, inputs, params)]
    found = {} if recompute else storage.cached_values([k for k in keys if k is not None])
    rows, computed = [], []
    for rep, i, kw, key in zip(reps, inputs, params, keys):
        value = found.get(key) if key is not None else None
        cached = value is not None
        if value is None:
            value = compute_one(storage, rep, p, i)
            computed.append((rep, i, kw, value))
        rows.append((rep.rep_id, rep.model, rep.checkpoint, rep.step, rep.site, rep.layer, rep.dataset, p.label,
                     p.method, float(value.value), (value.extra or {}).get("r2"), int(value.n), p.folds, cached))
    _store(storage, computed, p)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _store(storage: Storage, computed: list[tuple[RepRecord, _Inputs, dict[str, Any], ResultValue]],
           p: ProbeParams) -> None:
    """Cache computed probes in ``result`` (measure ``probe:<method>``, kind ``probe``, rep_a = rep_b)."""
    if not computed or storage.read_only:
        return
    about_subset = p.subset and f"where {p.subset}"
    with storage.session():
        ids = storage.result_ids([rep for rep, _, _, _ in computed], create=True)
        storage.store_values([(_key(ids[rep.key], p.method, kw, i.space), value,
                               {"kind": "probe", "params": kw, "subset": about_subset})
                              for rep, i, kw, value in computed], {})
