"""Executing comparison plans: cache lookups, one streaming pass per row space, results.

Moments-route measures of the pairs of a row space come from ONE
:class:`~actdb.query.moments.Moments` accumulator fed block by block, each rep read once.
The accumulator holds only the blocks the plan's uncached pairs need (``pairs=``), and a
rep whose own moments are in the per-rep cache (:mod:`actdb.query.cache`) does not have
its diagonal block accumulated again (``skip_diag=`` + ``install_rep``): adding a model to a
comparison costs the new model's blocks and the cross terms. When the accumulators exceed
``memory_budget``, reps are tiled into groups and each needed pair of groups gets a pass.
``stderr=True`` keeps one accumulator per contiguous row shard (20 by default) and adds a
delete-one-shard jackknife standard error, as ``measure(X, Y, stderr=True)`` does.
Gram-route measures use a seeded row sample of each rep. Results are written to the
``result`` table; a cached value is never recomputed unless ``recompute=True``.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from actdb.errors import InvalidInput, MeasureError
from actdb.progress import ComputeProgress
from actdb.query.cache import (
    Value,
    cached_rep_keys,
    cached_values,
    load_rep_moments,
    rep_cacheable,
    store_rep_moments,
    store_values,
)
from actdb.query.measures import DEFAULT_SAMPLE, DEFAULT_SHARDS, get_measure, plan_route, sample_rows
from actdb.query.moments import Moments
from actdb.query.passes import moments_pass, shard_edges
from actdb.query.result_row import CompareRow, compare_row
from actdb.query.rows import Source, build_sources
from actdb.query.tasks import RowSpace, Task
from actdb.store.records import RepRecord

if TYPE_CHECKING:
    import pandas as pd

    from actdb.query.storage import Storage

DEFAULT_MEMORY_BUDGET = 768 * 2**20
BLOCK_BYTES = 64 * 2**20
PairKey = tuple[int, int]


class ResultSet:
    """The rows of a computed comparison (one per pair x measure), in plan order."""

    def __init__(self, rows: list[CompareRow]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[CompareRow]:
        return iter(self.rows)

    def __repr__(self) -> str:
        return f"ResultSet({len(self.rows)} rows)"

    def _repr_html_(self) -> str:
        from actdb.query.html import result_html

        return result_html(self.rows)

    def to_arrow(self) -> pa.Table:
        if not self.rows:
            return pa.table({c: pa.array([], pa.string()) for c in ("measure", "value")})
        return pa.Table.from_pylist(self.rows)

    def to_pandas(self) -> pd.DataFrame:
        return self.to_arrow().to_pandas()

    def values(self, measure: str | None = None) -> list[float]:
        return [r["value"] for r in self.rows if measure is None or r["measure"] == measure]

    def matrix(self, measure: str | None = None) -> pd.DataFrame:
        """One measure as a rep x rep DataFrame (rows: A side, columns: B side; square when the
        sides share reps), a symmetric measure's missing pairs filled from their mirror;
        labelled by layer when each side differs only by layer. See :mod:`actdb.query.matrix`."""
        from actdb.query.matrix import matrix_frame

        return matrix_frame(self.rows, measure)

    def to_xarray(self, measure: str | None = None) -> Any:
        """:meth:`matrix` as an ``xarray.DataArray`` with dims ``(a, b)`` and each rep's model,
        checkpoint, step, site, layer, pooling, rep_id as coordinates (``model_a``, ...)."""
        from actdb.query.matrix import matrix_xarray

        return matrix_xarray(self.rows, measure)

    def pivot(self, index: str | list[str], columns: str | list[str], values: str = "value", *,
              measure: str | None = None) -> pd.DataFrame:
        """``to_pandas().pivot(...)`` of one measure's rows (``measure``, or the only one), e.g.
        a trajectory table ``pivot(index="step_a", columns="layer_a")``."""
        from actdb.query.matrix import pick_measure, pivot_frame

        rows = pick_measure(self.rows, measure)[1]
        return pivot_frame(ResultSet(rows).to_pandas(), index=index, columns=columns, values=values)


def _row(task: Task, v: Value, cached: bool) -> CompareRow:
    return compare_row(task, get_measure(task.measure).kind, v, cached)


# ----------------------------------------------------------------------- planning
def accumulator_bytes(dims: Sequence[int], pairs: set[PairKey] | None, skip_diag: Sequence[int] = ()) -> int:
    """Bytes of one float64 accumulator of reps ``dims`` holding the blocks ``pairs`` needs
    (all ``P(P+1)/2`` when None), less the skipped diagonal blocks."""
    p, total = len(dims), sum(dims)
    if pairs is None:
        keys = {(i, j) for i in range(p) for j in range(i, p)}
    else:
        keys = {(min(i, j), max(i, j)) for i, j in pairs} | {(i, i) for pair in pairs for i in pair}
    keys -= {(i, i) for i in skip_diag}
    return 8 * (sum(dims[i] * dims[j] for i, j in keys) + p * total + 2 * total + p * p + p)


def _groups(reps: list[RepRecord], budget: int) -> list[list[RepRecord]]:
    """Split reps into groups whose pairwise unions keep all-pairs accumulators within budget."""
    cap = max(max(r.dim for r in reps), int(math.sqrt(budget / 18)))
    groups: list[list[RepRecord]] = []
    cur: list[RepRecord] = []
    width = 0
    for r in reps:
        if cur and width + r.dim > cap:
            groups.append(cur)
            cur, width = [], 0
        cur.append(r)
        width += r.dim
    if cur:
        groups.append(cur)
    return groups


def _block_rows(reps: list[RepRecord]) -> int:
    chunk = max(r.chunk_rows for r in reps)
    width = sum(r.dim for r in reps)
    fit = max(1, BLOCK_BYTES // max(1, width * 8))
    return max(chunk, (fit // chunk) * chunk)


def _passes(tasks: list[Task], budget: int, skip: set[tuple[str, int]]) -> list[list[Task]]:
    """The tasks of each pass: one pass when the blocks they need fit ``budget``; else reps
    are tiled into groups and each needed pair of groups gets a pass (a group's own pairs
    ride along with a cross-group pass that reads it anyway)."""
    reps = list({r.key: r for t in tasks for r in (t.a, t.b)}.values())
    index = {r.key: i for i, r in enumerate(reps)}
    pairs = {(index[t.a.key], index[t.b.key]) for t in tasks}
    if accumulator_bytes([r.dim for r in reps], pairs, [index[k] for k in skip if k in index]) <= budget:
        return [tasks]
    groups = _groups(reps, budget)
    group_of = {r.key: gi for gi, g in enumerate(groups) for r in g}
    needed: dict[tuple[int, int], list[Task]] = defaultdict(list)
    for t in tasks:
        gi, gj = sorted((group_of[t.a.key], group_of[t.b.key]))
        needed[(gi, gj)].append(t)
    for gi in range(len(groups)):
        if (gi, gi) in needed:
            host = next((k for k in needed if gi in k and k[0] != k[1]), None)
            if host is not None:
                needed[host] += needed.pop((gi, gi))
    return list(needed.values())


def _run_moments(storage: Storage, space: RowSpace, tasks: list[Task], sources: dict[tuple[str, int], Source],
                 budget: int, executor: str, address: str | None, stderr: bool,
                 recompute: bool = False, tracker: ComputeProgress | None = None) -> dict[tuple[Any, ...], Value]:
    reps = list({r.key: r for t in tasks for r in (t.a, t.b)}.values())
    n = sources[reps[0].key].n
    shards = min(DEFAULT_SHARDS, n) if stderr else 0
    # per-rep cache: a cached rep's diagonal block is not accumulated again (not with
    # stderr: the jackknife needs every block of every shard; not with recompute: then
    # everything comes from the data)
    reuse = not stderr and not recompute
    cached = cached_rep_keys(storage, reps, space, n) if reuse else set()
    out: dict[tuple[Any, ...], Value] = {}
    own = [t for t in tasks if t.a.key == t.b.key and t.a.key in cached]  # the cache alone answers
    if own:
        singles = load_rep_moments(storage, [t.a for t in own], space, n)
        cached -= {t.a.key for t in own if t.a.key not in singles}  # files lost or damaged: recompute
        own = [t for t in own if t.a.key in singles]
        for t in own:
            t0 = time.perf_counter()
            value = _from_moments(t, singles[t.a.key].pair(0, 0))
            out[t.cache_key] = Value(value, n, "moments", time.perf_counter() - t0)
    tracker = tracker or ComputeProgress(0, False)
    tracker.finish(len(own))
    rest = [t for t in tasks if t.cache_key not in out]
    copies = shards + 3 if stderr else 1  # the shards, their total and one delete-one accumulator
    stored: set[tuple[str, int]] = set(cached)
    plan = _passes(rest, budget // copies, cached) if rest else []
    for number, ts in enumerate(plan):
        members = list({r.key: r for t in ts for r in (t.a, t.b)}.values())
        on_rows = tracker.begin_pass(number, len(plan), len(ts), n, sum(r.nbytes / max(1, r.n_rows) for r in members))
        index = {r.key: i for i, r in enumerate(members)}
        pairs = sorted({(index[t.a.key], index[t.b.key]) for t in ts})
        # reps whose own moments an earlier pass of this plan stored count as cached too
        skip = [index[k] for k in index if k in cached]
        srcs = [sources[r.key] for r in members]
        edges = shard_edges(n, shards) if stderr else None
        t0 = time.perf_counter()
        while True:
            if executor == "dask":
                from actdb.query.distributed import dask_moments

                parts = dask_moments(storage, members, srcs, _block_rows(members), address, pairs=pairs,
                                     skip_diag=skip, edges=edges, on_rows=on_rows)
            else:
                parts = moments_pass(srcs, _block_rows(members), pairs=pairs, skip_diag=skip, edges=edges,
                                     on_rows=on_rows)
            total = parts[0] if len(parts) == 1 else sum(parts[1:], parts[0])
            total.settle()  # read-only from here: centred in place, not in a copy (memory)
            if not skip:
                break
            # cached own statistics go in as stored, after settling: values never depend on the cache
            singles = load_rep_moments(storage, [members[i] for i in skip], space, n)
            lost = {members[i].key for i in skip if members[i].key not in singles}
            if not lost:
                for i in skip:
                    total.install_rep(i, singles[members[i].key])
                break
            # a cached group was damaged since planning (it is dropped): run the pass again,
            # accumulating those reps' own blocks too, rather than return a wrong value
            cached -= lost
            stored -= lost
            skip = [i for i in skip if members[i].key not in lost]
        new = {r.key: (r, total.rep(index[r.key])) for r in members if r.key not in stored}
        store_rep_moments(storage, new, space)
        stored |= set(new)
        if reuse and not storage.read_only and rep_cacheable(space):
            cached |= set(new)
        values = {t.cache_key: _from_moments(t, total.pair(index[t.a.key], index[t.b.key])) for t in ts}
        errors = _jackknife(ts, index, total, parts) if stderr else {}
        elapsed = (time.perf_counter() - t0) / max(1, len(ts))
        extra = {"jackknife_shards": shards} if stderr else None
        for t in ts:
            out[t.cache_key] = Value(values[t.cache_key], total.n, "moments", elapsed, extra,
                                     errors.get(t.cache_key))
        tracker.finish(len(ts))
        del parts, total, new  # this pass's accumulators go before the next pass makes its own
    return out


def _from_moments(t: Task, pm: Any) -> float:
    spec = get_measure(t.measure)
    if spec.from_moments is None:
        raise InvalidInput(f"measure {t.measure!r} has no moments route")
    return _finite(spec.from_moments(pm, **t.params_dict), t)


def _jackknife(tasks: list[Task], index: dict[tuple[str, int], int], total: Moments,
               parts: list[Moments]) -> dict[tuple[Any, ...], float]:
    """Delete-one-shard jackknife standard errors (Efron 1982), as
    :func:`actdb.query.measures.jackknife_stderr` computes them: ``θ_(g)`` from
    ``total − shard_g`` (exact, no data re-read), ``SE = √((G−1)/G · Σ_g (θ_(g) − θ̄)²)``.
    One delete-one accumulator at a time serves every pair of the pass."""
    g = len(parts)
    loo: dict[tuple[Any, ...], list[float]] = {t.cache_key: [] for t in tasks}
    for part in parts:
        rest = total - part
        for t in tasks:
            loo[t.cache_key].append(_from_moments(t, rest.pair(index[t.a.key], index[t.b.key])))
    out = {}
    for key, thetas in loo.items():
        arr = np.asarray(thetas)
        out[key] = float(np.sqrt((g - 1) / g * np.sum((arr - arr.mean()) ** 2)))
    return out


def _run_gram(tasks: list[Task], sources: dict[tuple[str, int], Source], budget: int,
              tracker: ComputeProgress | None = None) -> dict[tuple[Any, ...], Value]:
    """Gram-route tasks on seeded row samples. Kernels/RDMs/neighbour sets are built once
    per rep (per sample and kernel), in groups of reps whose states fit ``budget``."""
    from actdb.query.measures import _prepared as P

    out: dict[tuple[Any, ...], Value] = {}
    samples: dict[tuple[tuple[str, int], int, int], np.ndarray] = {}

    def rows_of(rep: RepRecord, size: int, seed: int) -> tuple[np.ndarray, Any]:
        rs = sample_rows(sources[rep.key].n, size, seed)
        key = (rep.key, size, seed)
        if key not in samples:
            samples[key] = sources[rep.key].sample(rs.indices)
        return samples[key], rs

    def split(t: Task) -> tuple[dict[str, Any], int, int]:
        p = dict(t.params_dict)
        return p, int(p.pop("sample", DEFAULT_SAMPLE)), int(p.pop("seed", 0))

    pairwise = [t for t in tasks if not P.preparable(t.measure, split(t)[0])]
    prepared = [t for t in tasks if t not in pairwise]
    for t in pairwise:
        spec = get_measure(t.measure)
        p, size, seed = split(t)
        t0 = time.perf_counter()
        (x, rs), (y, _) = rows_of(t.a, size, seed), rows_of(t.b, size, seed)
        if spec.from_rows is None:
            raise InvalidInput(f"measure {t.measure!r} has no form over rows; it cannot run on the gram route")
        value = spec.from_rows(x, y, **p)
        out[t.cache_key] = Value(_finite(value, t), sources[t.a.key].n, "gram", time.perf_counter() - t0,
                                 _sample_extra(rs, seed))
        if tracker is not None:
            tracker.finish(1)
    by_kind: dict[tuple[Any, ...], list[Task]] = defaultdict(list)
    for t in prepared:
        p, size, seed = split(t)
        by_kind[(P.state_key(t.measure, p), size, seed)].append(t)
    for (skey, size, seed), ts in by_kind.items():
        reps = list({r.key: r for t in ts for r in (t.a, t.b)}.values())
        m = min(size, sources[reps[0].key].n)
        per_state = 8 * m * m if skey[0] in ("rbf", "linear") else 4 * m * m
        cap = max(2, int(budget // max(1, per_state)))
        groups = [reps[i: i + max(1, cap // 2)] for i in range(0, len(reps), max(1, cap // 2))]
        where = {r.key: gi for gi, grp in enumerate(groups) for r in grp}
        todo: dict[tuple[int, int], list[Task]] = defaultdict(list)
        for t in ts:
            gi, gj = sorted((where[t.a.key], where[t.b.key]))
            todo[(gi, gj)].append(t)
        for (gi, gj), pair_tasks in todo.items():
            states: dict[tuple[str, int], Any] = {}
            for r in groups[gi] + (groups[gj] if gj != gi else []):
                x, rs = rows_of(r, size, seed)
                states[r.key] = P.prepare(pair_tasks[0].measure, x, split(pair_tasks[0])[0])
            for t in pair_tasks:
                p, _, _ = split(t)
                t0 = time.perf_counter()
                value = P.compare(t.measure, states[t.a.key], states[t.b.key], p)
                rs = sample_rows(sources[t.a.key].n, size, seed)
                out[t.cache_key] = Value(_finite(value, t), sources[t.a.key].n, "gram", time.perf_counter() - t0,
                                         _sample_extra(rs, seed))
                if tracker is not None:
                    tracker.finish(1)
    return out


def _sample_extra(rs: Any, seed: int) -> dict[str, Any]:
    return {"sample": {"size": len(rs.indices), "seed": seed, "exact": bool(rs.exact)}}


def _finite(value: float, task: Task) -> float:
    if value is None or not np.isfinite(value):
        raise MeasureError(f"{task.measure} of {task.a.label()} vs {task.b.label()} is not finite ({value}); "
                           "the reps may be constant or degenerate on these rows")
    return float(value)


def run_plan(storage: Storage, tasks: list[Task], *, executor: str = "local", address: str | None = None,
             recompute: bool = False, memory_budget: int | None = None, stderr: bool = False,
             progress: bool | None = False) -> ResultSet:
    """Evaluate ``tasks``: cached values are looked up, the rest computed (one pass per row
    space for moments-route measures) and cached. ``stderr`` adds jackknife standard errors
    (moments-route measures only); a cached value without one is then recomputed.
    ``progress``: a bar on stderr (None: on a terminal or in a notebook; see :mod:`actdb.progress`)."""
    if executor not in ("local", "dask"):
        raise InvalidInput(f"executor={executor!r}: choose 'local' or 'dask'")
    if stderr:
        check_stderr(t.measure for t in tasks)
    budget = int(memory_budget or DEFAULT_MEMORY_BUDGET)
    cached = {} if recompute else cached_values(storage, tasks, stderr=stderr)
    todo: dict[tuple[Any, ...], Task] = {}
    for t in tasks:
        if t.cache_key not in cached:
            todo.setdefault(t.cache_key, t)
    computed: dict[tuple[Any, ...], tuple[Task, Value]] = {}
    by_space: dict[RowSpace, list[Task]] = defaultdict(list)
    for t in todo.values():
        by_space[t.space].append(t)
    tracker = ComputeProgress(len(todo), progress)
    try:
        for space, ts in by_space.items():
            values = _compute_space(storage, space, ts, budget=budget, executor=executor, address=address,
                                    stderr=stderr, recompute=recompute, tracker=tracker)
            for key, v in values.items():
                computed[key] = (todo[key], v)
    finally:
        tracker.close()
    store_values(storage, computed)
    rows = []
    for t in tasks:
        key = t.cache_key
        if key in cached:
            rows.append(_row(t, cached[key], True))
        else:
            rows.append(_row(t, computed[key][1], False))
    return ResultSet(rows)


def _compute_space(storage: Storage, space: RowSpace, tasks: list[Task], *, budget: int, executor: str,
                   address: str | None, stderr: bool, recompute: bool,
                   tracker: ComputeProgress | None = None) -> dict[tuple[Any, ...], Value]:
    """The values of the uncached ``tasks`` of one row space: model-route measures by running
    the models, the rest from one read of the reps' rows, each on its planned route."""
    values: dict[tuple[Any, ...], Value] = {}
    model_tasks = [t for t in tasks if get_measure(t.measure).route == "model"]
    if model_tasks:
        from actdb.query.stitching import run_model_tasks

        values |= run_model_tasks(storage, model_tasks)
        if tracker is not None:
            tracker.finish(len(model_tasks))
    ts = [t for t in tasks if get_measure(t.measure).route != "model"]
    if not ts:
        return values
    reps = list({r.key: r for t in ts for r in (t.a, t.b)}.values())
    sources = build_sources(storage, space, reps)
    n = next(iter(sources.values())).n
    if n < 2:
        raise MeasureError(f"the row space {space.unit} has {n} row(s) after subset/alignment; need >= 2")
    dims = [r.dim for r in reps]
    mom = [t for t in ts if plan_route(get_measure(t.measure), n, dims, len(ts), stderr=stderr) == "moments"]
    gram = [t for t in ts if t not in mom]
    if mom:
        values |= _run_moments(storage, space, mom, sources, budget, executor, address, stderr, recompute, tracker)
    if gram:
        values |= _run_gram(gram, sources, budget, tracker)
    return values


def check_stderr(measures: Any) -> None:
    """``stderr=True`` needs moments-route measures (the jackknife re-reads no data)."""
    for name in dict.fromkeys(measures):
        spec = get_measure(name)
        if spec.route != "moments":
            raise InvalidInput(
                f"stderr=True is available for moments-route measures only; {name!r} is computed on the "
                f"{spec.route} route. Compute it in a plan without stderr, or choose one of: "
                + ", ".join(sorted(n for n, s in _registry().items() if s.route == "moments")))


def _registry() -> dict[str, Any]:
    from actdb.query.measures import REGISTRY

    return REGISTRY
