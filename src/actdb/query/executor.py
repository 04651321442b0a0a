"""Executing comparison plans: cache lookups, one streaming pass per row space, results.

Moments-route measures of every pair in a row space come from ONE
:class:`~actdb.query.moments.Moments` accumulator fed block by block, each rep read once
(when the accumulators of all reps exceed ``memory_budget``, reps are tiled into groups
and each needed pair of groups gets a pass, so a rep is read once per group pair it is
in). Gram-route measures use a seeded row sample of each rep. Results are written to the
``result`` table; a cached value is never recomputed unless ``recompute=True``.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from actdb._version import __version__
from actdb.errors import InvalidInput, MeasureError
from actdb.query.measures import choose_route, get_measure, sample_rows
from actdb.query.moments import Moments
from actdb.query.plan import RowSpace, Task
from actdb.query.rows import Source, build_sources
from actdb.query.selection import Rep
from actdb.store import schema as S

if TYPE_CHECKING:
    import pandas as pd

    from actdb.database import Database

DEFAULT_MEMORY_BUDGET = 768 * 2**20
BLOCK_BYTES = 64 * 2**20
GEMM_BUDGET = 256 * 2**20  # the accumulator's working buffers (row panels and products)
_CKA = ("linear_cka", "debiased_cka")


@dataclass(frozen=True)
class Value:
    value: float
    n: int
    route: str
    seconds: float
    extra: dict[str, Any] | None = None
    stderr: float | None = None


class ResultSet:
    """The rows of a computed comparison (one per pair x measure), in plan order."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.rows)

    def __repr__(self) -> str:
        return f"ResultSet({len(self.rows)} rows)"

    def to_arrow(self) -> pa.Table:
        if not self.rows:
            return pa.table({c: pa.array([], pa.string()) for c in ("measure", "value")})
        return pa.Table.from_pylist(self.rows)

    def to_pandas(self) -> pd.DataFrame:
        return self.to_arrow().to_pandas()

    def values(self, measure: str | None = None) -> list[float]:
        return [r["value"] for r in self.rows if measure is None or r["measure"] == measure]


def _row(task: Task, v: Value, cached: bool) -> dict[str, Any]:
    spec = get_measure(task.measure)
    out: dict[str, Any] = {"measure": task.measure, "kind": spec.kind, "value": v.value, "stderr": v.stderr, "n": v.n}
    for side, rep in (("a", task.a), ("b", task.b)):
        for k, val in rep.describe().items():
            out[f"{k}_{side}"] = val
    out.update({"dataset": task.a.dataset, "subset": task.space.subset, "align": task.space.align,
                "route": v.route, "cached": cached, "seconds": v.seconds,
                "params": json.dumps(task.params_dict, sort_keys=True)})
    return out


# ------------------------------------------------------------------------- cache
def catalog_ids(db: Database, reps: Sequence[Rep], *, create: bool) -> dict[tuple[str, int], int]:
    """The id each rep has in this store's ``result`` table: its own id for a local rep,
    ``-foreign_rep.id`` for a rep of an attached store (registered when ``create``)."""
    out: dict[tuple[str, int], int] = {}
    foreign = []
    for rep in reps:
        if rep.store == "local":
            out[rep.key] = rep.rep_id
        else:
            foreign.append(rep)
    if not foreign:
        return out
    with db.catalog.connect(write=create) as conn:
        for rep in foreign:
            uri = str(db.store_handle(rep.store).path)
            where = (S.foreign_rep.c.store_uri == uri, S.foreign_rep.c.remote_rep_id == rep.rep_id,
                     S.foreign_rep.c.checksum == rep.checksum)
            fid = conn.execute(sa.select(S.foreign_rep.c.id).where(*where)).scalar()
            if fid is None and create:
                conn.execute(S.foreign_rep.insert().values(
                    store_uri=uri, remote_rep_id=rep.rep_id, checksum=rep.checksum, model=rep.model,
                    checkpoint=rep.checkpoint, step=rep.step, dataset=rep.dataset, site=rep.site, layer=rep.layer,
                    pooling=rep.pooling, created_at=_now()))
                fid = conn.execute(sa.select(S.foreign_rep.c.id).where(*where)).scalar()
            if fid is not None:
                out[rep.key] = -int(fid)
    return out


def _db_key(key: tuple[Any, ...], ids: dict[tuple[str, int], int]) -> tuple[Any, ...] | None:
    a, b = ids.get(key[2]), ids.get(key[3])
    return None if a is None or b is None else (key[0], key[1], a, b, key[4])


def cached_values(db: Database, tasks: Sequence[Task]) -> dict[tuple[Any, ...], Value]:
    """Cached values of the tasks, by cache key (catalog only)."""
    if not tasks:
        return {}
    ids = catalog_ids(db, list({r.key: r for t in tasks for r in (t.a, t.b)}.values()), create=False)
    wanted = {}
    for t in tasks:
        k = _db_key(t.cache_key, ids)
        if k is not None:
            wanted[k] = t.cache_key
    if not wanted:
        return {}
    rep_ids = sorted({k[2] for k in wanted})
    out: dict[tuple[Any, ...], Value] = {}
    with db.catalog.connect() as conn:
        for start in range(0, len(rep_ids), 500):
            rows = conn.execute(sa.select(S.result.c.measure, S.result.c.params_hash, S.result.c.rep_a,
                                          S.result.c.rep_b, S.result.c.subset_hash, S.result.c.value,
                                          S.result.c.n, S.result.c.seconds, S.result.c.extra, S.result.c.stderr)
                                .where(S.result.c.rep_a.in_(rep_ids[start: start + 500]))).all()
            for r in rows:
                key = wanted.get((r[0], r[1], r[2], r[3], r[4]))
                if key is not None:
                    extra = json.loads(r[8]) if r[8] else {}
                    out[key] = Value(r[5], r[6], extra.get("route", "cached"), r[7] or 0.0, extra, r[9])
    return out


def store_values(db: Database, computed: dict[tuple[Any, ...], tuple[Task, Value]]) -> None:
    """Insert computed values into ``result`` (skipping keys another writer stored first)."""
    if not computed or db.read_only:
        return
    now = _now()
    with db.catalog.session():
        ids = catalog_ids(db, list({r.key: r for t, _ in computed.values() for r in (t.a, t.b)}.values()),
                          create=True)
        local = {_db_key(k, ids): tv for k, tv in computed.items()}
        with db.catalog.connect(write=True) as conn:
            existing = set()
            rep_ids = sorted({k[2] for k in local if k is not None})
            for start in range(0, len(rep_ids), 500):
                rows = conn.execute(sa.select(S.result.c.measure, S.result.c.params_hash, S.result.c.rep_a,
                                              S.result.c.rep_b, S.result.c.subset_hash)
                                    .where(S.result.c.rep_a.in_(rep_ids[start: start + 500]))).all()
                existing |= {tuple(r) for r in rows}
            records = []
            for key, (task, v) in local.items():
                if key is None or key in existing:
                    continue
                spec = get_measure(task.measure)
                extra = dict(v.extra or {})
                extra["route"] = v.route
                records.append(dict(
                    measure=task.measure, kind=spec.kind, params_hash=key[1],
                    params=json.dumps(task.params_dict, sort_keys=True), rep_a=key[2], rep_b=key[3],
                    subset_hash=key[4], subset=_subset_text(task.space), value=float(v.value), stderr=v.stderr,
                    n=v.n, seconds=v.seconds, extra=json.dumps(extra, sort_keys=True, default=str),
                    actdb_version=__version__, computed_at=now))
            if records:
                conn.execute(S.result.insert(), records)


def _subset_text(space: RowSpace) -> str | None:
    parts = [p for p in (space.subset and f"where {space.subset}", space.align and f"align {space.align}") if p]
    return "; ".join(parts) or None


def _now() -> Any:
    from actdb.store.store import now

    return now()


# ----------------------------------------------------------------------- planning
def _needs_moments(task: Task, n: int, dims: list[int], n_pairs: int) -> bool:
    spec = get_measure(task.measure)
    if spec.route == "model":
        return False
    if spec.route != "moments":
        return False
    if task.measure in _CKA:
        sample = DEFAULT_SAMPLE_EXACT
        return not (n <= sample and choose_route(n, dims, n_pairs) == "gram")
    return True


DEFAULT_SAMPLE_EXACT = 4096


def _groups(reps: list[Rep], budget: int) -> list[list[Rep]]:
    """Split reps into groups whose pairwise unions keep the accumulators within budget."""
    total = sum(r.dim for r in reps)
    if 4.5 * total * total <= budget:
        return [reps]
    cap = max(max(r.dim for r in reps), int(math.sqrt(budget / 18)))
    groups, cur, width = [], [], 0
    for r in reps:
        if cur and width + r.dim > cap:
            groups.append(cur)
            cur, width = [], 0
        cur.append(r)
        width += r.dim
    if cur:
        groups.append(cur)
    return groups


def _block_rows(reps: list[Rep], sources: dict[tuple[str, int], Source]) -> int:
    chunk = max(r.chunk_rows for r in reps)
    width = sum(r.dim for r in reps)
    fit = max(1, BLOCK_BYTES // max(1, width * 8))
    return max(chunk, (fit // chunk) * chunk)


def moments_pass(sources: list[Source], block_rows: int, start: int = 0, stop: int | None = None) -> Moments:
    """Accumulate moments of several sources with identical rows over underlying rows
    ``start:stop`` (the unit of work of both executors)."""
    m = Moments.empty([s.array.shape[1] for s in sources], budget_bytes=GEMM_BUDGET)
    iterators = [s.blocks(block_rows, start, stop) for s in sources]
    for blocks in zip(*iterators):
        if len(blocks[0]):
            m.update(list(blocks))
    return m


def _run_moments(db: Database, tasks: list[Task], sources: dict[tuple[str, int], Source],
                 budget: int, executor: str, address: str | None) -> dict[tuple[Any, ...], Value]:
    reps_by_key: dict[tuple[str, int], Rep] = {}
    for t in tasks:
        reps_by_key[t.a.key] = t.a
        reps_by_key[t.b.key] = t.b
    reps = list(reps_by_key.values())
    groups = _groups(reps, budget)
    group_of = {r.key: gi for gi, g in enumerate(groups) for r in g}
    needed: dict[tuple[int, int], list[Task]] = defaultdict(list)
    for t in tasks:
        gi, gj = sorted((group_of[t.a.key], group_of[t.b.key]))
        needed[(gi, gj)].append(t)
    # a group's own pairs ride along with any cross-group pass that already reads it
    for gi in range(len(groups)):
        if (gi, gi) in needed:
            host = next((k for k in needed if gi in k and k[0] != k[1]), None)
            if host is not None:
                needed[host] += needed.pop((gi, gi))
    out: dict[tuple[Any, ...], Value] = {}
    for (gi, gj), ts in needed.items():
        members = groups[gi] + (groups[gj] if gj != gi else [])
        index = {r.key: i for i, r in enumerate(members)}
        srcs = [sources[r.key] for r in members]
        t0 = time.perf_counter()
        if executor == "dask":
            from actdb.query.distributed import dask_moments

            m = dask_moments(db, members, srcs, _block_rows(members, sources), address)
        else:
            m = moments_pass(srcs, _block_rows(members, sources))
        elapsed = (time.perf_counter() - t0) / max(1, len(ts))
        for t in ts:
            spec = get_measure(t.measure)
            assert spec.from_moments is not None
            value = _finite(spec.from_moments(m.pair(index[t.a.key], index[t.b.key]), **t.params_dict), t)
            out[t.cache_key] = Value(value, m.n, "moments", elapsed)
    return out


def _run_gram(tasks: list[Task], sources: dict[tuple[str, int], Source], budget: int) -> dict[tuple[Any, ...], Value]:
    """Gram-route tasks on seeded row samples. Kernels/RDMs/neighbour sets are built once
    per rep (per sample and kernel), in groups of reps whose states fit ``budget``."""
    from actdb.query.measures import _prepared as P
    from actdb.query.measures._gram_route import linear_cka_rows

    out: dict[tuple[Any, ...], Value] = {}
    samples: dict[tuple[tuple[str, int], int, int], np.ndarray] = {}

    def rows_of(rep: Rep, size: int, seed: int) -> tuple[np.ndarray, Any]:
        rs = sample_rows(sources[rep.key].n, size, seed)
        key = (rep.key, size, seed)
        if key not in samples:
            samples[key] = sources[rep.key].sample(rs.indices)
        return samples[key], rs

    def split(t: Task) -> tuple[dict[str, Any], int, int]:
        p = dict(t.params_dict)
        return p, int(p.pop("sample", DEFAULT_SAMPLE_EXACT)), int(p.pop("seed", 0))

    pairwise = [t for t in tasks if not P.preparable(t.measure, split(t)[0])]
    prepared = [t for t in tasks if t not in pairwise]
    for t in pairwise:
        spec = get_measure(t.measure)
        p, size, seed = split(t)
        t0 = time.perf_counter()
        (x, rs), (y, _) = rows_of(t.a, size, seed), rows_of(t.b, size, seed)
        if spec.route == "moments":
            value = linear_cka_rows(x, y, debiased=t.measure == "debiased_cka")
        else:
            assert spec.from_rows is not None
            value = spec.from_rows(x, y, **p)
        out[t.cache_key] = Value(_finite(value, t), sources[t.a.key].n, "gram", time.perf_counter() - t0,
                                 _sample_extra(rs, seed))
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
            todo[tuple(sorted((where[t.a.key], where[t.b.key])))].append(t)  # type: ignore[index]
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
    return out


def _sample_extra(rs: Any, seed: int) -> dict[str, Any]:
    return {"sample": {"size": int(len(rs.indices)), "seed": seed, "exact": bool(rs.exact)}}


def _finite(value: float, task: Task) -> float:
    if value is None or not np.isfinite(value):
        raise MeasureError(f"{task.measure} of {task.a.label()} vs {task.b.label()} is not finite ({value}); "
                           "the reps may be constant or degenerate on these rows")
    return float(value)


def run_plan(db: Database, tasks: list[Task], *, executor: str = "local", address: str | None = None,
             recompute: bool = False, memory_budget: int | None = None) -> ResultSet:
    if executor not in ("local", "dask"):
        raise InvalidInput(f"executor={executor!r}: choose 'local' or 'dask'")
    budget = int(memory_budget or DEFAULT_MEMORY_BUDGET)
    cached = {} if recompute else cached_values(db, tasks)
    todo: dict[tuple[Any, ...], Task] = {}
    for t in tasks:
        if t.cache_key not in cached:
            todo.setdefault(t.cache_key, t)
    computed: dict[tuple[Any, ...], tuple[Task, Value]] = {}
    by_space: dict[RowSpace, list[Task]] = defaultdict(list)
    for t in todo.values():
        by_space[t.space].append(t)
    for space, ts in by_space.items():
        model_tasks = [t for t in ts if get_measure(t.measure).route == "model"]
        if model_tasks:
            from actdb.query.stitching import run_model_tasks

            for key, v in run_model_tasks(db, model_tasks).items():
                computed[key] = (todo[key], v)
        ts = [t for t in ts if get_measure(t.measure).route != "model"]
        if not ts:
            continue
        reps = list({r.key: r for t in ts for r in (t.a, t.b)}.values())
        sources = build_sources(db, space, reps)
        n = next(iter(sources.values())).n
        if n < 2:
            raise MeasureError(f"the row space {space.unit} has {n} row(s) after subset/alignment; need >= 2")
        dims = [r.dim for r in reps]
        mom = [t for t in ts if _needs_moments(t, n, dims, len(ts))]
        gram = [t for t in ts if t not in mom]
        values: dict[tuple[Any, ...], Value] = {}
        if mom:
            values |= _run_moments(db, mom, sources, budget, executor, address)
        if gram:
            values |= _run_gram(gram, sources, budget)
        for key, v in values.items():
            computed[key] = (todo[key], v)
    store_values(db, computed)
    rows = []
    for t in tasks:
        key = t.cache_key
        if key in cached:
            rows.append(_row(t, cached[key], True))
        else:
            rows.append(_row(t, computed[key][1], False))
    return ResultSet(rows)
