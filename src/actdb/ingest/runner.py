"""``run``: a model (or a checkpoint sweep) over a dataset, activations streamed into the store.

Order of work, so that bad input fails before anything is written: parse the
arguments, read the texts, list the checkpoints, load the first checkpoint, resolve
its sites, tokenize. Then the dataset, token table, model and ``ingest_run`` records
are written, and each checkpoint is run: hashed, registered, its reps opened (or
resumed), batches computed in the main thread while a background thread writes the
previous batch, and finally every rep committed.

Resume: each rep writer knows how many rows are safely flushed; the forward pass
restarts at the batch holding the first example not yet flushed for every rep, with
the same batch boundaries as before (``batch_size`` must not change), so a resumed
ingest writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actdb.errors import AlreadyExists, DtypeOverflow, InvalidInput, NonFinite, NotFound
from actdb.ingest.checkpoints import CheckpointSpec, parse_checkpoints
from actdb.ingest.result import CheckpointResult, IngestResult
from actdb.ingest.texts import Texts, check_texts, load_texts
from actdb.ingest.tokenize import TokenTable, effective_max_length, pad_batch, tokenize
from actdb.ingest.writer import BackgroundWriter
from actdb.progress import wanted
from actdb.store import runs
from actdb.store.arrays import parse_dtype
from actdb.store.parse import parse_name, parse_pooling

if TYPE_CHECKING:
    from actdb.models import LoadedModel, Site
    from actdb.store.store import Store


def store_of(target: Any) -> Store:
    """The store to ingest into: a :class:`Store`, or an object holding one as ``.store``."""
    from actdb.store.store import Store

    if isinstance(target, Store):
        return target
    held = getattr(target, "store", None)
    if isinstance(held, Store):
        return held
    raise InvalidInput(f"ingest writes into an open store (actdb.open(PATH)), not {type(target).__name__}")


def parse_poolings(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"token,mean"`` or ``["token", "mean"]`` -> ``("token", "mean")`` (validated, deduplicated)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(dict.fromkeys(parse_pooling(str(p).strip()) for p in items if str(p).strip()))
    if not out:
        raise InvalidInput("pooling is empty; give token, mean, first and/or last")
    return out


def default_model_name(source: str) -> str:
    """The folder's name for a local path, the hub id itself otherwise."""
    from actdb.models import is_local

    if is_local(source):
        path = Path(source).expanduser()
        return (path.resolve() if path.exists() else path).name or "model"
    return source


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("actdb", "torch", "transformers", "tokenizers", "numpy", "zarr", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


@contextmanager
def _progress(total: int, quiet: bool) -> Iterator[Any]:
    """A rich progress bar (tokens, tokens/s, ETA) on a terminal or in a notebook; a no-op otherwise
    (see :func:`actdb.progress.wanted`)."""
    if not wanted(False if quiet else None):
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    class _Rate(TransferSpeedColumn):
        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{speed:,.0f} tok/s", style="progress.data.speed")

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(),
               _Rate(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("ingest", total=total)
        yield (bar, task)


def run(target: Any, model: str | os.PathLike[str], dataset: Any, *, checkpoints: Any = None,
        sites: str | Sequence[str] = ("hidden.*",), pooling: str | Sequence[str] = ("token",),
        batch_size: int = 32, max_length: int | None = None, device: str = "cpu", dtype: str = "float16",
        texts: Any = None, text_column: str = "text", label_column: str | None = None,
        name: str | None = None, tokenizer: Any = None, model_dtype: str | None = None,
        revision: str | None = None, quiet: bool = False,
        on_sites: Callable[[list[Site]], None] | None = None) -> IngestResult:
    """Run ``model`` (or each of its ``checkpoints``) over ``dataset`` and store the activations.

    ``target``: the :class:`~actdb.store.Store` to write into, or an open ``Database``
    (its local store is used).

    ``model``: a local model folder or a hub id (offline: in the local cache), or a
    folder of ``checkpoint-*``/``step*`` subfolders. ``name``: the model's name in the
    store (default: the folder name or hub id). ``dataset``: a dataset name — already in
    the store, or created from ``texts`` (a list of strings, a .txt/.jsonl/.csv/.parquet
    file with ``text_column``/``label_column``, or a ``datasets.Dataset``); a list or
    file may also be passed as ``dataset`` directly (named after the file, or by hash).
    ``checkpoints``: ``["name=path_or_revision", ...]``, a dict, or a folder (see
    :func:`actdb.ingest.checkpoints.parse_checkpoints`). ``sites``: ``hidden.*``,
    ``hidden.N``, ``hidden.-1``, module paths or globs. ``pooling``: any of ``token``,
    ``mean``, ``first``, ``last`` (each a separate rep, one pass). ``max_length``: tokens
    per text (longer texts are truncated and counted). ``dtype``: stored dtype
    (float16, bfloat16, float32); ``model_dtype``: compute dtype (default: the
    checkpoint's). Re-running a finished ingest writes nothing; an interrupted one
    resumes (same ``batch_size`` for identical bytes). Empty texts are refused.
    ``on_sites``: called with the matched sites once they are known, before anything is
    written or run (the CLI prints them; raising from it stops the ingest there).
    """
    db = store_of(target)
    started = time.perf_counter()
    poolings = parse_poolings(pooling)
    stored_dtype = parse_dtype(dtype)
    patterns = _parse_run_args(batch_size, sites)
    from actdb.models import load_model, parse_device, resolve_sites, tokenizer_hash

    parse_device(device)
    source, ds_name, text_list = _resolve_texts(db, dataset, texts, text_column, label_column)

    # -- checkpoints, first model, sites, tokens: all checked before any write
    model_source = os.fspath(model)
    specs = _checkpoint_specs(checkpoints, model_source, revision)
    model_name = parse_name(name or default_model_name(model_source), "model", allow_slash=True)
    first = load_model(specs[0].source, specs[0].revision, device, model_dtype, tokenizer=tokenizer)
    first_sites = resolve_sites(first, patterns)
    if on_sites is not None:
        on_sites(first_sites)
    ml = effective_max_length(first.tokenizer, first.config, max_length)
    tok_hash = tokenizer_hash(first.tokenizer)
    table = tokenize(first.tokenizer, text_list, ml)

    ctx = _Context(db=db, model_name=model_name, ds_name=ds_name, patterns=patterns, poolings=poolings,
                   dtype=stored_dtype, batch_size=batch_size, max_length=ml, device=device, quiet=quiet,
                   model_dtype=model_dtype, tokenizer_arg=tokenizer)
    # -- a finished ingest is a no-op: look before writing anything
    if source is not None and _exists(db, ds_name):
        db.datasets.add(ds_name, text_list, labels=source.labels)  # no write; raises if the contents differ
    tok_name = runs.tokenizer_name_for(db, tok_hash) or model_name
    _check_weights(ctx, specs[0], first)  # new weights under a stored name: refused before any write
    done = _already_done(ctx, specs, first_sites, tok_name, table, first)
    if done is not None:
        return IngestResult(model_name, ds_name, tok_name, ml, table.n_examples, table.n_rows, table.n_truncated,
                            tuple(s.name for s in first_sites), poolings, tuple(done), None,
                            time.perf_counter() - started)

    with db.session():
        if source is not None:
            db.datasets.add(ds_name, text_list, labels=source.labels)
        tok = db.tokenizations.add(ds_name, tok_name, table.table, max_length=ml, tokenizer_hash=tok_hash,
                                  n_truncated=table.n_truncated)
        db.models.add(model_name, family=first.family, architecture=first.architecture, width=first.hidden_size,
                     depth=first.n_layers, n_params=first.n_params)
        run_args = {"model": model_source, "name": model_name, "dataset": ds_name,
                    "checkpoints": [f"{s.name}={s.revision or s.source}" for s in specs], "sites": patterns,
                    "pooling": list(poolings), "batch_size": batch_size, "max_length": ml, "device": device,
                    "dtype": stored_dtype, "model_dtype": model_dtype}
        run_id = runs.start_ingest_run(db, model=model_name, dataset=ds_name, args=run_args,
                                       versions=_versions(), device=str(device))
    ctx.run_id = run_id
    ctx.tokenizations[tok_hash] = (tok_name, tok.id, table)
    results = _run_checkpoints(ctx, specs, first, table, run_id, started)
    return IngestResult(model_name, ds_name, tok_name, ml, table.n_examples, table.n_rows, table.n_truncated,
                        tuple(s.name for s in first_sites), poolings, tuple(results), run_id,
                        time.perf_counter() - started)


def _parse_run_args(batch_size: int, sites: str | Sequence[str]) -> list[str]:
    """Check ``batch_size``; the site patterns as a non-empty list."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be a positive integer, not {batch_size!r}")
    patterns = [sites] if isinstance(sites, str) else list(sites)
    if not patterns:
        raise InvalidInput("sites is empty; give hidden.* or module paths/globs")
    return patterns


def _resolve_texts(db: Store, dataset: Any, texts: Any, text_column: str,
                   label_column: str | None) -> tuple[Texts | None, str, list[str]]:
    """The texts to ingest, the dataset's name and its texts: loaded from ``texts`` (or from
    ``dataset`` when that is not a name), else read from the stored dataset."""
    source: Texts | None = None
    if texts is not None:
        source = load_texts(texts, text_column=text_column, label_column=label_column)
    elif not isinstance(dataset, str):
        source = load_texts(dataset, text_column=text_column, label_column=label_column)
        dataset = source.name or "texts-" + hashlib.sha256("\x00".join(source.texts).encode()).hexdigest()[:12]
    if isinstance(dataset, os.PathLike):
        dataset = os.fspath(dataset)
    ds_name = parse_name(dataset, "dataset")
    if source is not None:
        return source, ds_name, source.texts
    try:
        text_list = db.datasets.texts(ds_name)
    except NotFound as exc:
        raise NotFound(f"{exc}; or pass texts= (a list, a file or a dataset object) to create it") from None
    check_texts(text_list, f"dataset {ds_name!r}")
    return None, ds_name, text_list


def _checkpoint_specs(checkpoints: Any, model_source: str, revision: str | None) -> list[CheckpointSpec]:
    """The checkpoints to run: parsed from ``checkpoints``, or the one hub ``revision``."""
    specs = parse_checkpoints(checkpoints, model_source)
    if revision is not None:
        if checkpoints is not None:
            raise InvalidInput("pass either revision= or checkpoints=, not both")
        specs = [CheckpointSpec(revision, model_source, revision)]
    return specs


def _run_checkpoints(ctx: _Context, specs: list[CheckpointSpec], first: LoadedModel, table: TokenTable,
                     run_id: int, started: float) -> list[CheckpointResult]:
    """Ingest every checkpoint in turn (the first one already loaded), then record how the
    run ended (complete, interrupted or failed) without masking the error that ended it."""
    results: list[CheckpointResult] = []
    status, n_tokens = "failed", 0
    try:
        total = table.n_rows * len(specs)  # an estimate for the progress bar (resumed parts finish early)
        with _progress(total, ctx.quiet) as bar:
            ctx.bar = bar
            for i, spec in enumerate(specs):
                loaded = first if i == 0 else _load(ctx, spec, first)
                results.append(_ingest_checkpoint(ctx, loaded, spec))
                n_tokens += results[-1].n_tokens
                if i > 0:
                    del loaded
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        seconds = time.perf_counter() - started
        try:
            runs.finish_ingest_run(ctx.db, run_id, status=status, n_tokens=n_tokens, seconds=seconds)
        except Exception:  # never mask the original error
            if status == "complete":
                raise
    return results


class _Context:
    """What every checkpoint of one run shares."""

    def __init__(self, **kw: Any):
        self.db: Store = kw["db"]
        self.model_name: str = kw["model_name"]
        self.ds_name: str = kw["ds_name"]
        self.patterns: list[str] = kw["patterns"]
        self.poolings: tuple[str, ...] = kw["poolings"]
        self.dtype: str = kw["dtype"]
        self.batch_size: int = kw["batch_size"]
        self.max_length: int = kw["max_length"]
        self.device: str = kw["device"]
        self.quiet: bool = kw["quiet"]
        self.model_dtype: str | None = kw["model_dtype"]
        self.tokenizer_arg: Any = kw["tokenizer_arg"]
        self.run_id: int | None = None
        self.bar: Any = None
        self.tokenizations: dict[str, tuple[str, int, TokenTable]] = {}
        self.weights: dict[str, str] = {}  # checkpoint name -> weights hash (each hashed once)


def _has_tokenizer(folder: str) -> bool:
    path = Path(folder)
    return path.is_dir() and any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def _load(ctx: _Context, spec: CheckpointSpec, first: LoadedModel) -> LoadedModel:
    from actdb.models import load_model

    tok = ctx.tokenizer_arg
    if tok is None and spec.revision is None and not _has_tokenizer(spec.source):
        tok = first.tokenizer  # a checkpoint folder without tokenizer files uses the first one's
    return load_model(spec.source, spec.revision, ctx.device, ctx.model_dtype, tokenizer=tok)


def _complete_reps(ctx: _Context, checkpoint: str, tok_id: int) -> dict[tuple[str, str], int]:
    try:
        found = ctx.db.reps.find(model=ctx.model_name, checkpoint=checkpoint, dataset=ctx.ds_name)
    except NotFound:
        return {}
    return {(r.site, r.pooling): r.id for r in found if r.tokenization_id == tok_id}


def _check_weights(ctx: _Context, spec: CheckpointSpec, loaded: LoadedModel) -> str:
    """The weights hash of checkpoint ``spec`` (``loaded``), checked against the hash stored
    under its name, if any: different weights are :class:`AlreadyExists` naming both hashes,
    never a silent "up-to-date" over the old activations. Hashed once per checkpoint per run
    (a read of every parameter; its cost: docs/reliability.md)."""
    from actdb.models import weights_hash
    from actdb.store.models import weights_mismatch

    whash = ctx.weights.get(spec.name) or weights_hash(loaded.model)
    ctx.weights[spec.name] = whash
    try:
        stored = ctx.db.models.checkpoint(ctx.model_name, spec.name).weights_hash
    except NotFound:
        return whash
    if stored is not None and stored != whash:
        raise AlreadyExists(weights_mismatch(ctx.model_name, spec.name, stored, whash))
    return whash


def _already_done(ctx: _Context, specs: list[CheckpointSpec], sites: list[Site], tok_name: str,
                  table: TokenTable, first: LoadedModel) -> list[CheckpointResult] | None:
    """Per-checkpoint results when every rep of every checkpoint is stored and every
    checkpoint's weights are the stored ones (the later checkpoints of a sweep are loaded
    to hash them), else None."""
    db = ctx.db
    if not _exists(db, ctx.ds_name):
        return None
    try:
        tok = db.tokenizations.get(ctx.ds_name, tok_name, ctx.max_length)
    except NotFound:
        return None
    if tok.content_hash != _table_hash(table):
        return None
    want = [(s.name, p) for s in sites for p in ctx.poolings]
    stored = []
    for spec in specs:
        have = _complete_reps(ctx, spec.name, tok.id)
        if any(w not in have for w in want):
            return None
        stored.append(tuple(have[w] for w in want))
    for spec in specs[1:]:  # every rep is stored: now make sure each checkpoint holds the same weights
        loaded = _load(ctx, spec, first)
        _check_weights(ctx, spec, loaded)
        del loaded
    out = []
    for spec, rep_ids in zip(specs, stored):
        ck = db.models.checkpoint(ctx.model_name, spec.name)
        out.append(CheckpointResult(spec.name, ck.step, ck.weights_hash, ck.duplicate_of, "up-to-date",
                                    rep_ids, 0, table.n_examples, 0, 0.0))
    return out


def _exists(db: Store, dataset: str) -> bool:
    try:
        db.datasets.get(dataset)
    except NotFound:
        return False
    return True


def _table_hash(table: TokenTable) -> str:
    from actdb.store.tokens import parse_token_table, token_table_hash

    return token_table_hash(parse_token_table(table.table, n_examples=table.n_examples))


def _tokens_for(ctx: _Context, loaded: LoadedModel) -> tuple[str, int, TokenTable]:
    from actdb.models import tokenizer_hash

    h = tokenizer_hash(loaded.tokenizer)
    if h not in ctx.tokenizations:
        db = ctx.db
        name = runs.tokenizer_name_for(db, h) or f"{ctx.model_name}@{h[7:19]}"
        table = tokenize(loaded.tokenizer, db.datasets.texts(ctx.ds_name), ctx.max_length)
        tok = db.tokenizations.add(ctx.ds_name, name, table.table, max_length=ctx.max_length, tokenizer_hash=h,
                                  n_truncated=table.n_truncated)
        ctx.tokenizations[h] = (name, tok.id, table)
    return ctx.tokenizations[h]


def _ingest_checkpoint(ctx: _Context, loaded: LoadedModel, spec: CheckpointSpec) -> CheckpointResult:
    import torch

    from actdb.models import capture, resolve_sites

    db = ctx.db
    t0 = time.perf_counter()
    whash = _check_weights(ctx, spec, loaded)
    source = spec.source if spec.revision is None else f"{spec.source}@{spec.revision}"
    with db.session():
        db.models.add_checkpoint(ctx.model_name, spec.name, step=spec.step, tokens_seen=spec.tokens_seen,
                          weights_hash=whash, source=source)
        ck = db.models.checkpoint(ctx.model_name, spec.name)
        tok_name, tok_id, table = _tokens_for(ctx, loaded)
        sites = resolve_sites(loaded, ctx.patterns)
        have = _complete_reps(ctx, spec.name, tok_id)
    todo = [(s, p) for s in sites for p in ctx.poolings if (s.name, p) not in have]
    if not todo:
        return CheckpointResult(spec.name, ck.step, whash, ck.duplicate_of, "up-to-date",
                                tuple(have[(s.name, p)] for s in sites for p in ctx.poolings), 0,
                                table.n_examples, 0, time.perf_counter() - t0)
    needed = [s for s in sites if any(t[0] is s for t in todo)]
    dims = _probe_dims(loaded, needed, table)
    writers: dict[tuple[str, str], Any] = {}
    with db.session():
        for s, p in todo:
            writers[(s.name, p)] = db.reps.writer(
                ctx.model_name, spec.name, ctx.ds_name, s.name, n_rows=None, dim=dims[s.name], tokenizer=tok_name,
                pooling=p, dtype=ctx.dtype, max_length=ctx.max_length, resume=True, ingest_run_id=ctx.run_id)
    # Where each rep stands, and the first example some rep still needs.
    position = {k: w.rows_written for k, w in writers.items()}
    first_needed = min(_first_example(table, p, position[(s, p)]) for (s, p) in writers)
    resumed = any(v > 0 for v in position.values())
    bs = ctx.batch_size
    start = (first_needed // bs) * bs
    n_tokens = 0
    background = BackgroundWriter(depth=2)
    device = loaded.device
    pad_id = _pad_id(loaded.tokenizer)
    try:
        for lo in range(start, table.n_examples, bs):
            hi = min(lo + bs, table.n_examples)
            ids, mask = pad_batch(table, lo, hi, pad_id)
            ids_t = torch.from_numpy(ids).to(device)
            mask_t = torch.from_numpy(mask).to(device)
            with torch.inference_mode():
                got = capture(loaded, ids_t, mask_t, needed)
                blocks = _extract(got, mask_t, needed, {p for _, p in writers})
            token_lo = int(table.starts[lo])
            item = []
            for (site, p), w in writers.items():
                block = blocks[(site, p)]
                first_row = token_lo if p == "token" else lo
                skip = position[(site, p)] - first_row
                if skip >= len(block):
                    continue
                position[(site, p)] = first_row + len(block)
                item.append((w, block[skip:] if skip > 0 else block))
            background.put(item)
            tokens = int(table.starts[hi] - table.starts[lo])
            n_tokens += tokens
            if ctx.bar is not None:
                ctx.bar[0].advance(ctx.bar[1], tokens)
        background.close()
    except (DtypeOverflow, NonFinite) as exc:
        background.abandon()
        with db.session():
            for w in writers.values():
                w.abort()
        raise type(exc)(f"checkpoint {spec.name!r}: {exc}; nothing of this checkpoint was kept") from None
    except BaseException:
        background.abandon()
        raise
    with db.session():
        for w in writers.values():
            w.finish()
    rep_ids = tuple(have.get((s.name, p)) or writers[(s.name, p)].rep_id for s in sites for p in ctx.poolings)
    return CheckpointResult(spec.name, ck.step, whash, ck.duplicate_of, "resumed" if resumed else "ingested",
                            rep_ids, table.n_examples - start, start, n_tokens, time.perf_counter() - t0)


def _first_example(table: TokenTable, pooling: str, rows_written: int) -> int:
    """The first example whose rows a rep still lacks."""
    if pooling != "token":
        return rows_written
    if rows_written >= table.n_rows:
        return table.n_examples
    return int(np.searchsorted(table.starts, rows_written, side="right") - 1)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def _probe_dims(loaded: LoadedModel, sites: list[Site], table: TokenTable) -> dict[str, int]:
    """Widths of the sites' outputs, from one short forward pass on example 0."""
    import torch

    from actdb.models import capture

    n = int(min(table.lengths()[0], 8))
    ids = torch.from_numpy(table.token_ids[:n][None, :].copy()).to(loaded.device)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        got = capture(loaded, ids, mask, sites)
    dims = {}
    for s in sites:
        t = got[s.name]
        if t.ndim < 3 or tuple(t.shape[:2]) != (1, n):
            raise InvalidInput(f"site {s.name!r} outputs shape {tuple(t.shape)}, not (batch, seq, ...); "
                               "only per-token module outputs can be stored")
        dims[s.name] = int(np.prod(t.shape[2:]))
    return dims


def _extract(got: dict[str, Any], mask: Any, sites: list[Site], poolings: set[str]) -> dict[tuple[str, str], Any]:
    """Per (site, pooling): float32 numpy rows — non-padding tokens ``(n_tokens, d)`` or
    one pooled row per example ``(batch, d)``."""
    import torch

    out: dict[tuple[str, str], Any] = {}
    b, t = mask.shape
    keep = mask.bool()
    lengths = mask.sum(1)
    for s in sites:
        h = got[s.name]
        if tuple(h.shape[:2]) != (b, t):
            raise InvalidInput(f"site {s.name!r} outputs shape {tuple(h.shape)} for a ({b}, {t}) batch; "
                               "only per-token module outputs can be stored")
        h = h.reshape(b, t, -1).float()
        if "token" in poolings:
            out[(s.name, "token")] = h[keep].cpu().numpy()
        if "mean" in poolings:
            summed = (h * mask[..., None].to(h.dtype)).sum(1)
            out[(s.name, "mean")] = (summed / lengths[:, None].to(h.dtype)).cpu().numpy()
        if "first" in poolings:
            out[(s.name, "first")] = h[:, 0].clone().cpu().numpy()
        if "last" in poolings:
            out[(s.name, "last")] = h[torch.arange(b, device=h.device), lengths - 1].cpu().numpy()
    return out
