"""Comparison plans: which pairs, which measures, over which rows — plain immutable data.

A :class:`Comparison` is built by :meth:`Selection.compare`; it validates its arguments
when built, and nothing reads an array until :meth:`Comparison.compute` (or
``to_pandas``/``to_arrow``). :meth:`Comparison.explain` reports the pairs, what is
cached, what would be read, the route and the estimated flops, from the catalog alone.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actdb.errors import InvalidInput
from actdb.query.measures import DEFAULT_SAMPLE, get_measure, plan_route
from actdb.query.tasks import ALIGNS, PAIR_MODES, RowSpace, Task, row_space
from actdb.store.records import RepRecord

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from actdb.query.executor import ResultSet
    from actdb.query.selection import Selection

def _pairs(a: list[RepRecord], b: list[RepRecord] | None, mode: str, reference: str | None,
           include_reference: bool = False) -> list[tuple[RepRecord, RepRecord]]:
    other = a if b is None else b
    if mode == "all":
        return [(x, y) for x in a for y in other]
    if mode == "same_layer":
        return [(x, y) for x in a for y in other if x.layer is not None and x.layer == y.layer
                and (b is not None or x.key != y.key)]
    if mode == "zip":
        if len(a) != len(other):
            raise InvalidInput(f"pairs='zip' needs selections of equal size; got {len(a)} and {len(other)}")
        return list(zip(a, other))
    if mode == "consecutive":
        groups: dict[tuple[Any, ...], list[RepRecord]] = defaultdict(list)
        for rep in a:
            groups[(rep.store, rep.model, rep.dataset, rep.site, rep.pooling, rep.tokenizer)].append(rep)
        out = []
        for reps in groups.values():
            if any(r.step is None for r in reps):
                missing = [r.checkpoint for r in reps if r.step is None]
                raise InvalidInput(f"pairs='consecutive' orders checkpoints by step; checkpoints {missing} "
                                   "have no step number")
            reps.sort(key=lambda r: r.step if r.step is not None else -1)  # every step is set (checked above)
            out += list(itertools.pairwise(reps))
        return out
    if mode == "to_reference":
        return _reference_pairs(a, other, reference, include_reference)
    raise InvalidInput(f"pairs={mode!r} is not a pairing mode; choose one of {', '.join(PAIR_MODES)}")


class NeedsOption(InvalidInput):
    """An InvalidInput whose fix is an option, worded per face: ``str(exc)`` names the
    Python keyword; :meth:`for_face` (``"cli"``, ``"http"``) the flag or JSON field."""

    def __init__(self, template: str, fixes: dict[str, str]):
        self.template, self.fixes = template, fixes
        super().__init__(template.format(fix=fixes["python"]))

    def for_face(self, face: str) -> str:
        return self.template.format(fix=self.fixes.get(face, self.fixes["python"]))


REFERENCE_FIXES = {"python": "reference='NAME' (or pairs='to_reference:NAME')",
                   "cli": "--reference NAME (actdb plot) or --pairs to_reference:NAME (actdb compare)",
                   "http": "reference=NAME (plots) or \"pairs\": \"to_reference:NAME\" (compare)"}


def default_reference(reps: list[RepRecord]) -> dict[tuple[str, str], str]:
    """The reference checkpoint of each (store, model) among ``reps``: the checkpoint named
    ``final`` when there is one, else the one with the highest step."""
    out: dict[tuple[str, str], str] = {}
    best: dict[tuple[str, str], tuple[int, str]] = {}
    for r in reps:
        key = (r.store, r.model)
        if r.checkpoint == "final":
            out[key] = "final"
        elif r.step is not None and (key not in best or (r.step, r.checkpoint) > best[key]):
            best[key] = (r.step, r.checkpoint)
    for key, (_, name) in best.items():
        out.setdefault(key, name)
    return out


def _reference_pairs(a: list[RepRecord], other: list[RepRecord], reference: str | None,
                     include_self: bool = False) -> list[tuple[RepRecord, RepRecord]]:
    """Each rep of ``a`` against the same (model, dataset, site, pooling, tokenizer) at the
    reference checkpoint (named, or by default ``final``, else the model's highest step);
    with ``include_self`` also each reference against itself (its point on a trajectory)."""
    if reference is not None:
        names = {(r.store, r.model): reference for r in other}
    else:
        names = default_reference(other)
        if not names:
            shown = sorted({r.checkpoint for r in other})[:8]
            raise NeedsOption("pairs='to_reference' has no default reference checkpoint: no checkpoint is named "
                              f"'final' and none has a step number (checkpoints: {shown}); name one with {{fix}}",
                              REFERENCE_FIXES)
    refs = {(r.store, r.model, r.dataset, r.site, r.pooling, r.tokenizer): r
            for r in other if r.checkpoint == names.get((r.store, r.model))}
    if not refs:
        known = sorted({r.checkpoint for r in other})
        from actdb.errors import close_matches

        named = reference if reference is not None else "/".join(sorted(set(names.values())))
        raise NeedsOption(f"pairs='to_reference' found no reps at reference checkpoint {named!r} "
                          f"({close_matches(named, known)}); name another with {{fix}}", REFERENCE_FIXES)
    out = []
    for r in a:
        ref = refs.get((r.store, r.model, r.dataset, r.site, r.pooling, r.tokenizer))
        if ref is not None and (r.checkpoint != ref.checkpoint or include_self):
            out.append((r, ref))
    return out


@dataclass(frozen=True)
class Comparison:
    """A lazy comparison plan (immutable). Build with :meth:`Selection.compare`."""

    a: Selection
    b: Selection | None
    measures: tuple[str, ...]
    pairs: str = "all"
    reference: str | None = None
    subset: str | None = None
    align: str | None = None
    params: tuple[tuple[str, Any], ...] = ()
    stderr: bool = False
    include_reference: bool = False
    _storage: Any = field(default=None, repr=False, compare=False, hash=False)

    @classmethod
    def build(cls, a: Selection, b: Selection | None, *, measures: tuple[str, ...], pairs: str,
              subset: str | None, align: str | None, reference: str | None, params: dict[str, Any],
              stderr: bool = False, include_reference: bool = False) -> Comparison:
        if not measures:
            raise InvalidInput("give at least one measure")
        specs = [get_measure(m) for m in measures]
        if not isinstance(stderr, bool):
            raise InvalidInput(f"stderr must be True or False, not {stderr!r}")
        if stderr:
            from actdb.query.executor import check_stderr

            check_stderr(measures)
        if isinstance(pairs, str) and pairs.startswith("to_reference:"):
            pairs, reference = "to_reference", pairs.split(":", 1)[1] or None
        if pairs not in PAIR_MODES:
            raise InvalidInput(f"pairs={pairs!r} is not a pairing mode; choose one of {', '.join(PAIR_MODES)}")
        if align is not None and align not in ALIGNS:
            raise InvalidInput(f"align={align!r} is not supported; choose one of {', '.join(ALIGNS)}")
        for key in params:
            if not any(key in s.params for s in specs):
                known = sorted({p for s in specs for p in s.params}) or ["none"]
                raise InvalidInput(f"parameter {key!r} is not taken by measure(s) {', '.join(measures)}; "
                                   f"valid parameters: {', '.join(known)}")
        for value in params.values():
            json.dumps(value)  # parameters must be plain data (they go into the cache key)
        if subset is not None:
            from actdb.query.rows import normalize_subset

            subset = normalize_subset(subset)
        if not isinstance(include_reference, bool):
            raise InvalidInput(f"include_reference must be True or False, not {include_reference!r}")
        return cls(a, b, tuple(measures), pairs, reference, subset, align, tuple(sorted(params.items())), stderr,
                   include_reference, a.storage)

    # ------------------------------------------------------------------ planning
    def pair_list(self) -> list[tuple[RepRecord, RepRecord]]:
        """The (a, b) rep pairs this plan compares (catalog only)."""
        return _pairs(self.a.resolve(), None if self.b is None else self.b.resolve(), self.pairs, self.reference,
                      self.include_reference)

    def tasks(self) -> list[Task]:
        out = []
        for x, y in self.pair_list():
            space = row_space(x, y, self.subset, self.align)
            for name in self.measures:
                spec = get_measure(name)
                given = {k: v for k, v in self.params if k in spec.params}
                resolved = spec.resolve_params(given)
                if spec.task_params is not None:  # the parameters that run (stitching's objective resolved)
                    resolved = spec.task_params(given, y)
                out.append(Task(x, y, name, tuple(sorted(resolved.items())), space))
        return out

    def explain(self, *, show: bool = True) -> str:
        """What compute() would do, from the catalog alone (reads no array)."""
        from actdb.query.cache import cached_rep_keys, cached_values

        tasks = self.tasks()
        cached = cached_values(self._storage, tasks, stderr=self.stderr)
        todo = [t for t in tasks if t.cache_key not in cached]
        reps: dict[tuple[str, int], RepRecord] = {}
        for t in todo:
            reps[t.a.key] = t.a
            reps[t.b.key] = t.b
        lines = [f"Comparison: {len(self.pair_list())} pairs x {len(self.measures)} measure(s) "
                 f"({', '.join(self.measures)}), pairs={self.pairs}"
                 + (f", reference={self.reference or 'final, else the highest step'}"
                    if self.pairs == "to_reference" else "")
                 + (f", subset={self.subset!r}" if self.subset else "")
                 + (f", align={self.align}" if self.align else "")
                 + (", stderr (jackknife)" if self.stderr else ""),
                 f"  cached: {len(tasks) - len(todo)} of {len(tasks)} values"]
        if todo:
            by_space: dict[RowSpace, list[Task]] = defaultdict(list)
            for t in todo:
                by_space[t.space].append(t)
            total_bytes = sum(r.nbytes for r in reps.values())
            lines.append(f"  to read: {len(reps)} reps, {total_bytes / 2**20:,.1f} MiB stored")
            for space, ts in by_space.items():
                space_reps = {t.a.key: t.a for t in ts} | {t.b.key: t.b for t in ts}
                n = next(iter(space_reps.values())).n_rows
                # the executor routes the array tasks (not the model-route ones) of a row space together
                arrays = [t for t in ts if get_measure(t.measure).route != "model"]
                dims = list({r.key: r.dim for t in arrays for r in (t.a, t.b)}.values())
                route_counts: dict[str, int] = defaultdict(int)
                blocks: set[tuple[tuple[str, int], tuple[str, int]]] = set()
                gram_reps: set[tuple[str, int]] = set()
                gram_pairs = 0
                for t in ts:
                    route = plan_route(get_measure(t.measure), n, dims, len(arrays), stderr=self.stderr)
                    route_counts[route] += 1
                    if route == "moments":
                        blocks |= {(t.a.key, t.a.key), (t.b.key, t.b.key),
                                   (min(t.a.key, t.b.key), max(t.a.key, t.b.key))}
                    elif route == "gram":
                        gram_reps |= {t.a.key, t.b.key}
                        gram_pairs += 1
                # (rows of a subset or an alignment are only known once evaluated: not here)
                have = set() if self.stderr or space.subset or space.align \
                    else cached_rep_keys(self._storage, list(space_reps.values()), space, n)
                width = {k: r.dim for k, r in space_reps.items()}
                flops = float(n) * sum(width[i] * width[j] * (1 if i == j else 2) for i, j in blocks
                                       if not (i == j and i in have))
                m = float(min(n, DEFAULT_SAMPLE))  # Gram route: kernels on a row sample, then products
                flops += m * m * (sum(width[k] for k in gram_reps) + gram_pairs)
                lines.append(f"  rows: {space.unit} (n={n:,}{', subset' if space.subset else ''}); "
                             f"routes: " + ", ".join(f"{k}={v}" for k, v in sorted(route_counts.items()))
                             + f"; estimated {flops / 1e9:,.2f} GFLOP"
                             + (f"; own moments of {len(have)} of {len(space_reps)} reps cached" if have else ""))
            for t in todo[:20]:
                lines.append(f"    {t.measure}: {t.a.label()}  vs  {t.b.label()}")
            if len(todo) > 20:
                lines.append(f"    ... and {len(todo) - 20} more")
        text = "\n".join(lines)
        if show:
            print(text)
        return text

    # ----------------------------------------------------------------- execution
    def compute(self, *, executor: str = "local", address: str | None = None, recompute: bool = False,
                memory_budget: int | None = None, progress: bool | None = None) -> ResultSet:
        """Run the plan: cached values are looked up, the rest computed in one pass per row
        space and cached. ``executor="dask"`` runs the passes on dask.distributed. With
        ``stderr=True`` on the plan, rows carry a jackknife standard error (``stderr``).
        ``progress``: a bar on stderr (values done, pass, MiB read, time left); None (the
        default) shows it on a terminal or in a notebook only, False never."""
        from actdb.query.executor import run_plan

        return run_plan(self._storage, self.tasks(), executor=executor, address=address, recompute=recompute,
                        memory_budget=memory_budget, stderr=self.stderr, progress=progress)

    def _repr_html_(self) -> str:
        from actdb.query.html import comparison_html

        return comparison_html(self)

    def to_arrow(self, **kwargs: Any) -> pa.Table:
        return self.compute(**kwargs).to_arrow()

    def to_pandas(self, **kwargs: Any) -> pd.DataFrame:
        return self.compute(**kwargs).to_pandas()
