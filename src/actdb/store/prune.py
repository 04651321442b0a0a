"""Pruning a store: removing reps (and what refers to them), clearing the caches, disk usage.

- :func:`plan_removal` / :func:`remove`: the reps a filter selects (model, checkpoint,
  dataset, site: names or globs; rep ids), the cached results and per-rep moments that
  refer to them, and the model, checkpoint and dataset rows the filter selects as a whole
  once they are empty. ``remove`` deletes the catalog rows first, then the arrays (a crash
  in between leaves orphan arrays, which ``actdb verify --repair`` removes).
- :func:`clear_cache`: cached measure values (``result``) and per-rep moments (their
  catalog rows, then their Zarr groups ``moments/NNNNNNNNN`` beside the arrays).
- :func:`disk_usage`: bytes of the arrays by model / checkpoint / site, the catalog's
  size and the caches' rows and bytes (moments: measured on disk for local arrays).

DuckDB refuses to delete a row in the same transaction as the rows whose foreign keys
referred to it, so the catalog deletes run in stages, children first, one transaction each:
(results, moments, reps), then (checkpoints, ingest runs, tokens, examples), then
(models, tokenizations), then datasets. Every stage after the first deletes only rows
nothing refers to any more, so an interrupted removal is finished by running it again.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from actdb.errors import InvalidInput, NotFound, close_matches
from actdb.store import arrays as A
from actdb.store import moments_files as MF
from actdb.store import schema as S

if TYPE_CHECKING:
    from actdb.store.store import Store

_BATCH = 500
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


# ------------------------------------------------------------------------- records
@dataclass(frozen=True)
class RemovedRep:
    """One rep a removal deletes (any status: complete, writing, replaced, corrupt)."""

    id: int
    model: str
    checkpoint: str
    dataset: str
    site: str
    pooling: str
    status: str
    nbytes: int  # bytes of its array on disk (the catalog's size where arrays are remote)


@dataclass(frozen=True)
class Removal:
    """What :func:`remove` deletes (``done=False``: the plan, nothing deleted yet)."""

    reps: tuple[RemovedRep, ...]
    results: int  # cached measure values that refer to the reps
    moments: int  # cached per-rep moments of the reps
    moments_bytes: int
    checkpoints: tuple[str, ...]  # "model/checkpoint" rows removed once empty
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    done: bool = False

    @property
    def rep_bytes(self) -> int:
        return sum(r.nbytes for r in self.reps)

    @property
    def empty(self) -> bool:
        return not (self.reps or self.results or self.moments or self.checkpoints or self.models or self.datasets)

    def summary(self) -> str:
        """One line: what is (or was) deleted."""
        parts = [f"{len(self.reps)} rep(s) ({human_bytes(self.rep_bytes)} of arrays)",
                 f"{self.results} cached result(s)",
                 f"{self.moments} cached moment set(s) ({human_bytes(self.moments_bytes)})"]
        for what, names in (("checkpoint", self.checkpoints), ("model", self.models), ("dataset", self.datasets)):
            if names:
                parts.append(f"{what}(s) {', '.join(names)}")
        return ("deleted " if self.done else "would delete ") + "; ".join(parts)


@dataclass(frozen=True)
class CacheCleared:
    results: int
    results_bytes: int
    moments: int
    moments_bytes: int

    def summary(self) -> str:
        return (f"cleared {self.results} cached result(s) ({human_bytes(self.results_bytes)}) and "
                f"{self.moments} cached moment set(s) ({human_bytes(self.moments_bytes)})")


@dataclass(frozen=True)
class _Filters:
    model: tuple[str, ...] = ()
    checkpoint: tuple[str, ...] = ()
    dataset: tuple[str, ...] = ()
    site: tuple[str, ...] = ()
    rep: tuple[int, ...] = ()
    given: tuple[str, ...] = field(default=())

    def whole(self, *allowed: str) -> bool:
        """Whether only ``allowed`` filters were given (the filter names whole entities)."""
        return bool(self.given) and set(self.given) <= set(allowed)


def human_bytes(n: int | float) -> str:
    """``1.5 MB`` (decimal units, as ``du -h --si``)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - loop returns


# ------------------------------------------------------------------------- parsing
def _patterns(value: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise InvalidInput(f"{what} filter {item!r:.100} is not a name or glob; give e.g. {what}='name*'")
    return tuple(items)


def _rep_ids(value: int | Iterable[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, (int, str)) else list(value)
    out = []
    for item in items:
        try:
            number = int(item)
        except (TypeError, ValueError):
            raise InvalidInput(f"rep id {item!r:.100} is not an integer; list ids with `actdb ls STORE reps`") from None
        if isinstance(item, bool) or number <= 0:
            raise InvalidInput(f"rep id {item!r:.100} is not a positive integer")
        out.append(number)
    return tuple(out)


def parse_filters(*, model: Any = None, checkpoint: Any = None, dataset: Any = None, site: Any = None,
                  rep: Any = None) -> _Filters:
    """The filters of a removal; at least one is required (nothing means nothing, never 'all')."""
    f = _Filters(_patterns(model, "model"), _patterns(checkpoint, "checkpoint"), _patterns(dataset, "dataset"),
                 _patterns(site, "site"), _rep_ids(rep))
    given = tuple(k for k in ("model", "checkpoint", "dataset", "site", "rep") if getattr(f, k))
    if not given:
        raise InvalidInput("say what to remove: give at least one of model, checkpoint, dataset, site or rep "
                           "(--model/--checkpoint/--dataset/--site/--rep); nothing is removed without a filter")
    return _Filters(f.model, f.checkpoint, f.dataset, f.site, f.rep, given)


def _match(patterns: tuple[str, ...], value: str) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _check_known(patterns: tuple[str, ...], known: Sequence[str], what: str, where: str) -> None:
    """NotFound for a pattern that names nothing in the store (a typo must not plan 'nothing')."""
    for p in patterns:
        if not any(fnmatch.fnmatchcase(k, p) for k in known):
            raise NotFound(f"no {what} matches {p!r} in {where}; {close_matches(p, known)}")


# ------------------------------------------------------------------------- planning
def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _BATCH):
        yield list(ids[start:start + _BATCH])


def _array_dir(store: Store, rep_id: int) -> Path | None:
    """The local folder of a rep's array (derived from its id), or None for remote arrays."""
    if "://" in store.arrays_location:
        return None
    return Path(store.arrays_location) / A.rep_path(rep_id)


def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def array_bytes(store: Store, row: Any) -> int:
    """Bytes a rep's array takes: measured on disk for local arrays; for remote arrays the
    catalog's ``nbytes`` (or rows x dim x item size)."""
    folder = _array_dir(store, row["id"])
    if folder is not None:
        return _dir_bytes(folder) if folder.is_dir() else 0
    if row["nbytes"] is not None:
        return int(row["nbytes"])
    return int(row["n_rows"]) * int(row["dim"]) * _ITEMSIZE.get(row["dtype"], 4)


def _rep_rows(conn: sa.Connection) -> list[Any]:
    r, c, m, d = S.rep, S.checkpoint, S.model, S.dataset
    q = (sa.select(r.c.id, m.c.name.label("model"), c.c.name.label("checkpoint"), d.c.name.label("dataset"),
                   r.c.site, r.c.pooling, r.c.status, r.c.nbytes, r.c.n_rows, r.c.dim, r.c.dtype,
                   r.c.checkpoint_id, c.c.model_id, r.c.dataset_id)
         .select_from(r.join(c, c.c.id == r.c.checkpoint_id).join(m, m.c.id == c.c.model_id)
                      .join(d, d.c.id == r.c.dataset_id))
         .order_by(m.c.name, c.c.step.nulls_last(), c.c.id, r.c.layer, r.c.site, r.c.id))
    return list(conn.execute(q).mappings())


def _count_refs(conn: sa.Connection, ids: list[int]) -> tuple[int, int, int]:
    """(results, moment sets, moment bytes) referring to rep ``ids``."""
    results = moments = moment_bytes = 0
    for part in _chunks(ids):
        results += conn.execute(sa.select(sa.func.count()).select_from(S.result).where(
            sa.or_(S.result.c.rep_a.in_(part), S.result.c.rep_b.in_(part)))).scalar_one()
        n, b = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(S.rep_moments.c.nbytes), 0))
                            .where(S.rep_moments.c.rep_id.in_(part))).one()
        moments += int(n)
        moment_bytes += int(b)
    return int(results), moments, moment_bytes


@dataclass(frozen=True)
class _Plan:
    removal: Removal
    checkpoint_ids: tuple[int, ...]
    model_ids: tuple[int, ...]
    dataset_ids: tuple[int, ...]


def _plan(store: Store, f: _Filters) -> _Plan:
    where = str(store.path)
    with store.catalog.connect() as conn:
        models = list(conn.execute(sa.select(S.model.c.id, S.model.c.name)).all())
        ckpts = list(conn.execute(sa.select(S.checkpoint.c.id, S.checkpoint.c.name, S.checkpoint.c.model_id)).all())
        datasets = list(conn.execute(sa.select(S.dataset.c.id, S.dataset.c.name)).all())
        rows = _rep_rows(conn)
        _check_known(f.model, [m.name for m in models], "model", where)
        model_name = {m.id: m.name for m in models}
        in_models = [c for c in ckpts if _match(f.model, model_name[c.model_id])]
        _check_known(f.checkpoint, [c.name for c in in_models], "checkpoint"
                     + (f" of model(s) {', '.join(f.model)}" if f.model else ""), where)
        _check_known(f.dataset, [d.name for d in datasets], "dataset", where)
        _check_known(f.site, sorted({r["site"] for r in rows}), "site", where)
        ids = {r["id"] for r in rows}
        for rep_id in f.rep:
            if rep_id not in ids:
                raise NotFound(f"no rep with id {rep_id} in {where}; list them with `actdb ls {where} reps`")
        chosen = [r for r in rows
                  if _match(f.model, r["model"]) and _match(f.checkpoint, r["checkpoint"])
                  and _match(f.dataset, r["dataset"]) and _match(f.site, r["site"])
                  and (not f.rep or r["id"] in f.rep)]
        # whole entities: what the filter names as a whole goes once it is empty
        whole_ckpts = [c for c in in_models if _match(f.checkpoint, c.name)] \
            if f.whole("model", "checkpoint") else []
        whole_models = [m for m in models if _match(f.model, m.name)] if f.whole("model") else []
        whole_datasets = [d for d in datasets if _match(f.dataset, d.name)] if f.whole("dataset") else []
        results, moments, moment_bytes = _count_refs(conn, [r["id"] for r in chosen])
    reps = tuple(RemovedRep(r["id"], r["model"], r["checkpoint"], r["dataset"], r["site"], r["pooling"],
                            r["status"], array_bytes(store, r)) for r in chosen)
    removal = Removal(reps, results, moments, moment_bytes,
                      tuple(f"{model_name[c.model_id]}/{c.name}" for c in whole_ckpts),
                      tuple(m.name for m in whole_models), tuple(d.name for d in whole_datasets))
    return _Plan(removal, tuple(c.id for c in whole_ckpts), tuple(m.id for m in whole_models),
                 tuple(d.id for d in whole_datasets))


def plan_removal(store: Store, **filters: Any) -> Removal:
    """What :func:`remove` with these filters would delete; reads the catalog (and the
    arrays' sizes), changes nothing."""
    return _plan(store, parse_filters(**filters)).removal


# ------------------------------------------------------------------------- removing
def _unreferenced(table: sa.Table, ids: Sequence[int], *children: tuple[sa.Table, sa.Column[Any]]) -> Any:
    """DELETE FROM table WHERE id IN ids AND no child row refers to it."""
    cond: list[sa.ColumnElement[bool]] = [table.c.id.in_(list(ids))]
    for _child, col in children:
        cond.append(~sa.exists().where(col == table.c.id))
    return table.delete().where(*cond)


def remove(store: Store, *, yes: bool = False, **filters: Any) -> Removal:
    """Delete the reps the filters select (model, checkpoint, dataset, site: names or
    globs; rep: ids), the cached results and moments that refer to them, and the model,
    checkpoint and dataset rows the filters name as a whole (``model=`` alone removes
    models; ``model=`` and/or ``checkpoint=`` alone remove checkpoints; ``dataset=`` alone
    removes datasets with their texts and token tables). Without ``yes`` nothing is
    deleted: the returned :class:`Removal` is the plan (``done=False``)."""
    f = parse_filters(**filters)
    plan = _plan(store, f)
    if not yes or plan.removal.empty:
        return plan.removal
    if store.read_only:
        from actdb.errors import ReadOnly

        raise ReadOnly(f"store {store.path} was opened read-only; reopen it with read_only=False to remove reps")
    ids = [r.id for r in plan.removal.reps]
    results = moments = 0
    groups: list[int] = []
    with store.catalog.connect(write=True) as conn:  # stage 1: the reps and their cache rows, atomically
        for part in _chunks(ids):
            results += conn.execute(S.result.delete().where(
                sa.or_(S.result.c.rep_a.in_(part), S.result.c.rep_b.in_(part)))).rowcount
            gone, _ = MF.delete_rows(conn, S.rep_moments.c.rep_id.in_(part))
            moments += len(gone)
            groups += gone
            conn.execute(S.rep.delete().where(S.rep.c.id.in_(part)))
    MF.delete_groups(store.root, groups)  # then the files (a crash leaves orphans: verify --repair)
    for rep_id in ids:  # and the arrays
        A.delete_array(store.root, A.rep_path(rep_id))
        _remove_quarantined(store, rep_id)
    gone_ckpts, gone_models, gone_datasets = _remove_entities(store, plan)
    r = plan.removal
    return Removal(r.reps, results, moments, r.moments_bytes,
                   tuple(n for i, n in zip(plan.checkpoint_ids, r.checkpoints) if i in gone_ckpts),
                   tuple(n for i, n in zip(plan.model_ids, r.models) if i in gone_models),
                   tuple(n for i, n in zip(plan.dataset_ids, r.datasets) if i in gone_datasets), done=True)


def _remove_quarantined(store: Store, rep_id: int) -> None:
    """A corrupt rep's array that ``verify --repair`` moved to ``STORE/quarantine/rep-ID``."""
    folder = store.path / "quarantine" / f"rep-{int(rep_id)}"
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder, ignore_errors=True)


def _remove_entities(store: Store, plan: _Plan) -> tuple[set[int], set[int], set[int]]:
    """Stages 2-4: now-empty checkpoints, models and datasets (children first; see the module doc)."""
    ckpts, models, datasets = list(plan.checkpoint_ids), list(plan.model_ids), list(plan.dataset_ids)
    if not (ckpts or models or datasets):
        return set(), set(), set()
    run, tok = S.ingest_run, S.tokenization
    gone_c: set[int] = set()
    gone_m: set[int] = set()
    gone_d: set[int] = set()
    with store.catalog.connect(write=True) as conn:  # stage 2
        if models:  # all checkpoints of a removed model go with it
            ckpts += [i for i in conn.execute(sa.select(S.checkpoint.c.id).where(
                S.checkpoint.c.model_id.in_(models))).scalars() if i not in ckpts]
        if ckpts:
            left = _unreferenced(S.checkpoint, ckpts, (S.rep, S.rep.c.checkpoint_id))
            conn.execute(left)
            gone_c = set(ckpts) - set(conn.execute(sa.select(S.checkpoint.c.id).where(
                S.checkpoint.c.id.in_(ckpts))).scalars())
        owners = []
        if models:
            owners.append(run.c.model_id.in_(models))
        if datasets:
            owners.append(run.c.dataset_id.in_(datasets))
        if owners:
            conn.execute(run.delete().where(sa.or_(*owners), ~sa.exists().where(S.rep.c.ingest_run_id == run.c.id)))
        if datasets:
            free = ~sa.exists().where(S.rep.c.dataset_id == S.dataset.c.id)
            empty = list(conn.execute(sa.select(S.dataset.c.id).where(S.dataset.c.id.in_(datasets), free)).scalars())
            if empty:
                tok_ids = sa.select(tok.c.id).where(tok.c.dataset_id.in_(empty))
                conn.execute(S.token.delete().where(S.token.c.tokenization_id.in_(tok_ids)))
                conn.execute(S.example.delete().where(S.example.c.dataset_id.in_(empty)))
            datasets = empty
    with store.catalog.connect(write=True) as conn:  # stage 3
        if models:
            conn.execute(_unreferenced(S.model, models, (S.checkpoint, S.checkpoint.c.model_id),
                                       (run, run.c.model_id)))
            gone_m = set(models) - set(conn.execute(sa.select(S.model.c.id).where(
                S.model.c.id.in_(models))).scalars())
        if datasets:
            conn.execute(tok.delete().where(tok.c.dataset_id.in_(datasets),
                                            ~sa.exists().where(S.rep.c.tokenization_id == tok.c.id),
                                            ~sa.exists().where(S.token.c.tokenization_id == tok.c.id)))
    if datasets:
        with store.catalog.connect(write=True) as conn:  # stage 4
            conn.execute(_unreferenced(S.dataset, datasets, (S.rep, S.rep.c.dataset_id), (tok, tok.c.dataset_id),
                                       (S.example, S.example.c.dataset_id), (run, run.c.dataset_id)))
            gone_d = set(datasets) - set(conn.execute(sa.select(S.dataset.c.id).where(
                S.dataset.c.id.in_(datasets))).scalars())
        store.datasets.forget()  # datasets are cached by name as immutable
    return gone_c, gone_m, gone_d


# ------------------------------------------------------------------------- caches
def _result_bytes(conn: sa.Connection, where: Any | None) -> int:
    """Approximate bytes of cached result rows: their text columns plus 120 bytes of fixed fields."""
    x = S.result.c
    length = sa.func.length
    size = (120 + length(x.params) + length(x.measure) + length(x.params_hash) + length(x.subset_hash)
            + sa.func.coalesce(length(x.subset), 0) + sa.func.coalesce(length(x.extra), 0))
    q = sa.select(sa.func.coalesce(sa.func.sum(size), 0))
    if where is not None:
        q = q.where(where)
    return int(conn.execute(q).scalar_one())


def _measure_filter(measure: str | Iterable[str] | None) -> Any | None:
    patterns = _patterns(measure, "measure")
    if not patterns:
        return None
    conds: list[sa.ColumnElement[bool]] = []
    for p in patterns:
        if any(ch in p for ch in "*?["):
            like = p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%").replace("?", "_")
            if "[" in p:
                raise InvalidInput(f"measure glob {p!r}: only * and ? are supported here")
            conds.append(S.result.c.measure.like(like, escape="\\"))
        else:
            conds.append(S.result.c.measure == p)
    return sa.or_(*conds)


def clear_cache(store: Store, *, measure: str | Iterable[str] | None = None) -> CacheCleared:
    """Delete cached measure values (all, or those of ``measure``: names or globs) and, when
    no measure is named, the cached per-rep moments too (moments are shared by every
    moment-based measure). Values are recomputed on the next query that needs them."""
    where = _measure_filter(measure)
    with store.catalog.connect(write=True) as conn:
        results_bytes = _result_bytes(conn, where)
        delete = S.result.delete() if where is None else S.result.delete().where(where)
        results = conn.execute(delete).rowcount
        groups: list[int] = []
        moments_bytes = 0
        if where is None:
            groups, moments_bytes = MF.delete_rows(conn)
    MF.delete_groups(store.root, groups)  # the files beside the arrays, once the rows are gone
    return CacheCleared(int(results), results_bytes, len(groups), moments_bytes)


# ------------------------------------------------------------------------- disk usage
BY = ("model", "checkpoint", "site")


def _catalog_bytes(store: Store, conn: sa.Connection) -> int:
    if store.catalog.dialect == "duckdb":
        database = sa.engine.make_url(store.catalog.url).database
        total = 0
        for suffix in ("", ".wal"):
            with contextlib.suppress(OSError, TypeError):
                total += os.stat(f"{database}{suffix}").st_size
        return total
    if store.catalog.dialect == "postgresql":
        return int(conn.exec_driver_sql(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')").scalar_one())
    return 0


def disk_usage(store: Store, *, by: str = "checkpoint") -> list[dict[str, Any]]:
    """Rows of ``what, model, checkpoint, site, count, bytes``: the arrays of the reps
    grouped ``by`` model, checkpoint or site (bytes measured on disk; every status counted),
    then the catalog file (or PostgreSQL schema), the result cache and the moments cache
    (count = rows; bytes of its groups beside the arrays), and the total of arrays, catalog
    and moments."""
    if by not in BY:
        raise InvalidInput(f"cannot group disk usage by {by!r}; choose one of {', '.join(BY)}")
    depth = BY.index(by) + 1
    with store.catalog.connect() as conn:
        rows = _rep_rows(conn)
        catalog = _catalog_bytes(store, conn)
        n_results = int(conn.execute(sa.select(sa.func.count()).select_from(S.result)).scalar_one())
        results_bytes = _result_bytes(conn, None)
        n_moments, moments_bytes = conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(S.rep_moments.c.nbytes), 0))).one()
    if "://" not in store.arrays_location:  # measured on disk (the groups beside the arrays)
        moments_bytes = MF.moments_bytes(store.root)
    groups: dict[tuple[str, ...], list[int]] = {}
    for r in rows:
        key = (r["model"], r["checkpoint"], r["site"])[:depth]
        entry = groups.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += array_bytes(store, r)
    out: list[dict[str, Any]] = []
    for key, (count, nbytes) in groups.items():
        full = key + (None,) * (3 - len(key))
        out.append({"what": "arrays", "model": full[0], "checkpoint": full[1], "site": full[2],
                    "count": count, "bytes": nbytes})
    arrays_total = sum(v[1] for v in groups.values())
    blank = {"model": None, "checkpoint": None, "site": None}
    out.append({"what": "catalog", **blank, "count": None, "bytes": catalog})
    out.append({"what": "cache: results", **blank, "count": n_results, "bytes": results_bytes})
    out.append({"what": "cache: moments", **blank, "count": int(n_moments), "bytes": int(moments_bytes)})
    out.append({"what": "total", **blank, "count": len(rows), "bytes": arrays_total + catalog + int(moments_bytes)})
    return out
