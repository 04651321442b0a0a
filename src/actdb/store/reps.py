"""Writing and finding reps: tokenizations, the two-phase rep writer, lookups."""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from actdb.errors import AlreadyExists, DtypeOverflow, InvalidInput, NotFound, UnderflowWarning, close_matches
from actdb.store import arrays as A
from actdb.store.checksums import ChunkChecksums
from actdb.store import schema as S
from actdb.store.catalog import bulk_insert, insert_if_absent
from actdb.store.parse import (
    as_numpy, check_finite, check_matrix, layer_of_site, parse_name, parse_pooling, parse_site,
)
from actdb.store.records import RepInfo, TokenizationInfo
from actdb.store.tokens import TOKEN_COLUMNS, parse_token_table, token_table_hash

if TYPE_CHECKING:
    from actdb.store.store import Store

_REP_COLS = """r.id, m.name, c.name, c.step, d.name, d.content_hash, r.site, r.layer, r.pooling, r.n_rows,
    r.dim, r.dtype, r.status, r.path, r.chunk_rows, r.shard_rows, r.tokenization_id, t.tokenizer,
    r.checksum, r.created_at"""
_REP_FROM = """FROM rep r JOIN checkpoint c ON c.id = r.checkpoint_id JOIN model m ON m.id = c.model_id
    JOIN dataset d ON d.id = r.dataset_id LEFT JOIN tokenization t ON t.id = r.tokenization_id"""

# The statements of a rep write (see RepsMixin._open_writer and RepWriter.finish).
_LOOKUP = """SELECT c.id AS checkpoint_id, c.step, r.id, CASE WHEN r.id IS NULL THEN nextval('rep_id_seq') END
    FROM checkpoint c JOIN model m ON m.id = c.model_id
    LEFT JOIN rep r ON r.checkpoint_id = c.id AND r.dataset_id = :ds AND r.site = :site AND r.pooling = :pooling
        AND r.tokenization_id {tok} AND r.status IN ('writing', 'complete')
    WHERE m.name = :model AND c.name = :ckpt"""  # few columns, no ORDER BY: on DuckDB each costs ~0.5 ms
_LOOKUP_TOK = sa.text(_LOOKUP.format(tok="= :tok"))
_LOOKUP_NO_TOK = sa.text(_LOOKUP.format(tok="IS NULL"))
_NEXT_REP_ID = sa.text("SELECT nextval('rep_id_seq')")
_INSERT_COLS = ("id", "checkpoint_id", "dataset_id", "tokenization_id", "site", "layer", "pooling", "n_rows", "dim",
                "dtype", "status", "path", "chunk_rows", "shard_rows", "codec", "rows_written", "replaces",
                "ingest_run_id", "created_at")
_INSERT_REP = sa.text(f"INSERT INTO rep ({', '.join(_INSERT_COLS)}) "
                      f"VALUES ({', '.join(':' + c for c in _INSERT_COLS)})")
_FINISH_COLS = ("status", "checksum", "completed_at", "rows_written", "n_nonfinite", "nbytes", "stat_mean", "stat_std",
                "stat_min", "stat_max", "stat_absmax")
_FINISH_REP = sa.text(f"UPDATE rep SET {', '.join(f'{c} = :{c}' for c in _FINISH_COLS)} WHERE id = :id")


def _now() -> Any:
    from actdb.store.store import now

    return now()


class RepWriter:
    """Streams rows of one rep into its array, shard by shard, then commits it.

    Rows are buffered until a whole shard is full (so no shard file is ever rewritten),
    each flushed shard is recorded in the catalog (``rows_written``) so an interrupted
    write resumes there, and :meth:`finish` flips the rep to ``complete`` with its
    checksum and statistics in one transaction. Use as a context manager: an exception
    leaves the ``writing`` row for resume (or ``verify --repair``).
    """

    def __init__(self, store: Store, rep_id: int, *, n_rows: int, dim: int, dtype: str, site: str,
                 chunk_rows: int, shard_rows: int, array: Any, start_row: int, stats: A.RowStats,
                 allow_nonfinite: bool, replaces: int | None, checksums: ChunkChecksums | None = None,
                 underflow: int = 0):
        self.store = store
        self.rep_id = rep_id
        self.n_rows, self.dim, self.dtype, self.site = n_rows, dim, dtype, site
        self.shard_rows = shard_rows
        self._array = array
        self.rows_written = start_row
        self._stats = stats
        self._checksums = checksums if checksums is not None else ChunkChecksums(chunk_rows)
        self.underflow = underflow
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.allow_nonfinite = allow_nonfinite
        self.replaces = replaces
        self.info: RepInfo | None = None

    @property
    def done(self) -> bool:
        return self.rows_written + self._buffered >= self.n_rows

    def append(self, block: Any) -> None:
        """Append rows ``(k, dim)`` (numpy or torch, any float dtype)."""
        block = as_numpy(block, what=f"rows for site {self.site!r}")
        check_matrix(block, n_rows=None, what=f"rows for site {self.site!r}")
        if block.shape[1] != self.dim:
            raise InvalidInput(f"rows for site {self.site!r} have {block.shape[1]} columns, the rep has {self.dim}")
        if self.rows_written + self._buffered + len(block) > self.n_rows:
            raise InvalidInput(f"rep {self.rep_id} (site {self.site!r}) takes {self.n_rows} rows; "
                               f"{self.rows_written + self._buffered + len(block)} were given")
        if not self.allow_nonfinite:
            check_finite(block, what=f"activations at site {self.site!r}")
        check_range(block, self.dtype, self.site)
        stored = A.to_storage(block, self.dtype)  # type: ignore[arg-type]
        self.underflow += count_underflow(block, stored, self.dtype)
        self._buffer.append(stored)
        self._buffered += len(block)
        while self._buffered >= self.shard_rows or (self._buffered and self.done):
            self._flush()

    def _flush(self) -> None:
        data = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        take = min(len(data), self.shard_rows)
        shard, rest = data[:take], data[take:]
        start = self.rows_written
        # checksums and statistics of a big shard run alongside zarr's encode and write
        stats = A.in_background(self._summarise, shard) if shard.nbytes >= 1 << 20 else None
        try:
            self._array[start: start + take] = shard
        finally:
            if stats is not None:
                stats.result()
        if stats is None:
            self._summarise(shard)
        self.rows_written += take
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)
        if self.rows_written < self.n_rows:  # the last shard is recorded by finish()
            with self.store.catalog.connect(write=True) as conn:
                conn.execute(S.rep.update().where(S.rep.c.id == self.rep_id).values(rows_written=self.rows_written))

    def _summarise(self, shard: np.ndarray) -> None:
        self._stats.update(shard)
        self._checksums.update(shard)

    def finish(self) -> RepInfo:
        """Commit: the rep becomes complete (and replaces the rep it overwrites, atomically)."""
        if self._buffered:
            self._flush()
        if self.rows_written != self.n_rows:
            raise InvalidInput(f"rep {self.rep_id} (site {self.site!r}) got {self.rows_written} of {self.n_rows} rows")
        A.seal(self._array, self._checksums.values, underflow=self.underflow)
        warn_underflow(self.underflow, self.n_rows * self.dim, self.dtype, self.site)
        values = dict(status="complete", checksum=self._stats.checksum, completed_at=_now(), rows_written=self.rows_written,
                      n_nonfinite=self._stats.nonfinite, nbytes=self.n_rows * self.dim * (4 if self.dtype == "float32" else 2),
                      **self._stats.summary())
        with self.store.catalog.connect(write=True) as conn:
            if self.replaces is not None:
                conn.execute(S.rep.update().where(S.rep.c.id == self.replaces).values(status="replaced"))
                # the replaced rep's cached own moments can never be read again (its data is gone)
                from actdb.store.moments_files import drop_rows

                drop_rows(conn, self.store._root, S.rep_moments.c.rep_id == self.replaces)
            conn.execute(_FINISH_REP, {**values, "id": self.rep_id})
        if self.replaces is not None:
            A.delete_array(self.store._root, A.rep_path(self.replaces))
        if self.info is None:
            self.info = self.store.rep(self.rep_id)
        else:
            self.info = dataclasses.replace(self.info, status="complete", checksum=self._stats.checksum)
        return self.info

    def abort(self) -> None:
        """Discard this unfinished write: its ``writing`` catalog row and its array are removed
        (for errors a resume would only repeat, such as a dtype overflow)."""
        self._buffer, self._buffered = [], 0
        with self.store.catalog.connect(write=True) as conn:
            deleted = conn.execute(S.rep.delete().where(S.rep.c.id == self.rep_id, S.rep.c.status == "writing"))
        if deleted.rowcount:
            A.delete_array(self.store._root, A.rep_path(self.rep_id))

    def __enter__(self) -> RepWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None and not self.done:
            raise InvalidInput(f"rep {self.rep_id} (site {self.site!r}) closed after {self.rows_written} "
                               f"of {self.n_rows} rows; it stays 'writing' until resumed")
        if exc_type is None:
            self.finish()


UNDERFLOW_WARN_SHARE = 0.01  # real residual streams reach ~0.5% (MiniLM's last layer): harmless


def count_underflow(block: np.ndarray, stored: np.ndarray, dtype: str) -> int:
    """Values that were not zero but are stored as zero (too small for the stored dtype:
    below about 3e-8 in float16, about 1e-45 in bfloat16 and float32)."""
    if dtype == "float32" and block.dtype in (np.float32, np.float16):
        return 0
    if dtype == "float16" and block.dtype == np.float16:
        return 0
    zero = (stored & 0x7FFF) == 0 if dtype == "bfloat16" else stored == 0  # bfloat16: raw bits, either sign
    return int(np.count_nonzero(zero & (block != 0)))


def warn_underflow(count: int, total: int, dtype: str, site: str) -> None:
    """Warn when a noticeable share of a rep's values underflowed to zero."""
    if total and count / total > UNDERFLOW_WARN_SHARE:
        warnings.warn(UnderflowWarning(
            f"{count} of {total} values ({count / total:.2%}) at site {site!r} were too small for {dtype} and are "
            f"stored as 0; store them with dtype='float32' or dtype='bfloat16' to keep them"), stacklevel=3)


def check_range(block: np.ndarray, dtype: str, site: str) -> None:
    """Refuse values the stored dtype cannot hold (never a silent inf)."""
    limit = A.FLOAT16_MAX if dtype == "float16" else float(np.finfo(np.float32).max)
    if block.dtype == np.float16 and dtype == "float16":
        return
    absmax = float(np.nanmax(np.abs(np.where(np.isfinite(block), block, 0)))) if block.size else 0.0
    if absmax > limit:
        raise DtypeOverflow(
            f"activations at site {site!r} reach |x| = {absmax:.6g}, beyond the largest {dtype} "
            f"({limit:.6g}); store them with dtype='float32' or dtype='bfloat16'")


class RepsMixin:
    """Rep-related methods of :class:`~actdb.store.store.Store`."""

    # ---------------------------------------------------------- tokenizations
    def add_tokenization(self: Store, dataset: str, tokenizer: str, tokens: Any, *, max_length: int = 0,
                         tokenizer_hash: str | None = None, n_truncated: int = 0) -> TokenizationInfo:
        """Store the token table of ``dataset`` tokenized by ``tokenizer`` (row -> example,
        position, token id, token text, char span, special flag). Idempotent for equal content."""
        tokenizer = parse_name(tokenizer, "tokenizer", allow_slash=True)
        ds = self.dataset(dataset)
        table = parse_token_table(tokens, n_examples=ds.n_examples)
        content = token_table_hash(table)
        existing = self._tokenization(ds.id, tokenizer, max_length)
        if existing is not None:
            if existing.content_hash != content:
                raise AlreadyExists(f"dataset {dataset!r} already has a different token table for tokenizer "
                                    f"{tokenizer!r} (max_length {max_length}); use another tokenizer name")
            return existing
        with self.catalog.connect(write=True) as conn:
            # insert-if-absent: a writer that loses a race to create it proceeds as if it had found it
            created = insert_if_absent(conn, S.tokenization, dict(
                dataset_id=ds.id, tokenizer=tokenizer, max_length=max_length, tokenizer_hash=tokenizer_hash,
                content_hash=content, n_rows=table.num_rows, n_truncated=n_truncated, created_at=_now()),
                ("dataset_id", "tokenizer", "max_length"))
            tid = conn.execute(sa.select(S.tokenization.c.id).where(
                S.tokenization.c.dataset_id == ds.id, S.tokenization.c.tokenizer == tokenizer,
                S.tokenization.c.max_length == max_length)).scalar_one()
            if created:
                bulk_insert(conn, S.token, table.add_column(0, "tokenization_id",
                                                            pa.array(np.full(table.num_rows, tid, np.int32))))
        found = self._tokenization(ds.id, tokenizer, max_length)
        assert found is not None
        if found.content_hash != content:
            raise AlreadyExists(f"dataset {dataset!r} already has a different token table for tokenizer "
                                f"{tokenizer!r} (max_length {max_length}); use another tokenizer name")
        return found

    def _tokenization(self: Store, dataset_id: int, tokenizer: str, max_length: int | None) -> TokenizationInfo | None:
        q = sa.select(S.tokenization).where(S.tokenization.c.dataset_id == dataset_id,
                                            S.tokenization.c.tokenizer == tokenizer)
        if max_length is not None:
            q = q.where(S.tokenization.c.max_length == max_length)
        with self.catalog.connect() as conn:
            r = conn.execute(q.order_by(S.tokenization.c.id)).mappings().first()
        if r is None:
            return None
        return TokenizationInfo(r["id"], r["dataset_id"], r["tokenizer"], r["max_length"], r["n_rows"],
                                r["content_hash"], r["n_truncated"])

    def tokenization(self: Store, dataset: str, tokenizer: str, max_length: int | None = None) -> TokenizationInfo:
        ds = self.dataset(dataset)
        found = self._tokenization(ds.id, tokenizer, max_length)
        if found is None:
            with self.catalog.connect() as conn:
                known = conn.execute(sa.select(S.tokenization.c.tokenizer).where(
                    S.tokenization.c.dataset_id == ds.id)).scalars().all()
            raise NotFound(f"dataset {dataset!r} has no token table for tokenizer {tokenizer!r}; "
                           f"{close_matches(tokenizer, known)}")
        return found

    def token_table(self: Store, tokenization_id: int) -> pa.Table:
        """The token table (row order) of a tokenization, as Arrow."""
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.select(S.token.c.row, S.token.c.example, S.token.c.position,
                                          S.token.c.token_id, S.token.c.token, S.token.c.char_start,
                                          S.token.c.char_end, S.token.c.special)
                                .where(S.token.c.tokenization_id == tokenization_id)
                                .order_by(S.token.c.row)).all()
        types = {"row": pa.int64(), **TOKEN_COLUMNS}
        cols = list(zip(*rows)) if rows else [[] for _ in types]
        return pa.table({n: pa.array(c, type=t) for (n, t), c in zip(types.items(), cols)})

    # ------------------------------------------------------------------- reps
    def write_rep(self: Store, model: str, checkpoint: str, dataset: str, site: str, array: Any, *,
                  tokens: Any = None, tokenizer: str | None = None, pooling: str = "token",
                  dtype: str = "float16", max_length: int = 0, layer: int | None = None,
                  allow_nonfinite: bool = False, overwrite: bool = False, codec: str | None = None) -> RepInfo:
        """Store one rep: ``array`` is ``(n_rows, dim)``, numpy or torch, any float dtype.

        Token-level reps (``pooling="token"``) need their token table: pass ``tokens``
        (and a ``tokenizer`` name) or the ``tokenizer`` of a token table already stored
        for ``dataset``. Example-level reps (``mean``, ``first``, ``last``) have one row
        per example. Everything is validated before anything is written.
        """
        values = as_numpy(array, what=f"array for site {site!r}")
        with self.catalog.session():
            return self._write_rep(model, checkpoint, dataset, site, values, tokens=tokens, tokenizer=tokenizer,
                                   pooling=pooling, dtype=dtype, max_length=max_length, layer=layer,
                                   allow_nonfinite=allow_nonfinite, overwrite=overwrite, codec=codec)

    def _write_rep(self: Store, model: str, checkpoint: str, dataset: str, site: str, values: np.ndarray, *,
                   tokens: Any, tokenizer: str | None, pooling: str, dtype: str, max_length: int,
                   layer: int | None, allow_nonfinite: bool, overwrite: bool, codec: str | None) -> RepInfo:
        writer = self.rep_writer(model, checkpoint, dataset, site, n_rows=None, dim=values.shape[-1] if values.ndim else 0,
                                 tokens=tokens, tokenizer=tokenizer, pooling=pooling, dtype=dtype,
                                 max_length=max_length, layer=layer, allow_nonfinite=allow_nonfinite,
                                 overwrite=overwrite, codec=codec, resume=False, _check=values)
        with writer:
            writer.append(values)
        assert writer.info is not None
        return writer.info

    def rep_writer(self: Store, model: str, checkpoint: str, dataset: str, site: str, *, n_rows: int | None,
                   dim: int, tokens: Any = None, tokenizer: str | None = None, pooling: str = "token",
                   dtype: str = "float16", max_length: int = 0, layer: int | None = None,
                   allow_nonfinite: bool = False, overwrite: bool = False, codec: str | None = None,
                   resume: bool = True, ingest_run_id: int | None = None, _check: np.ndarray | None = None) -> RepWriter:
        """A :class:`RepWriter` for streaming a rep in; with ``resume=True`` an interrupted
        write of the same rep continues where its last flushed shard ended."""
        site = parse_site(site)
        pooling = parse_pooling(pooling)
        dtype = A.parse_dtype(dtype)
        codec = codec or A.DEFAULT_CODEC
        A._codec(codec)
        ds = self.dataset(dataset)
        tok_id, token_rows, table = None, None, None
        if tokens is not None:
            if tokenizer is None:
                raise InvalidInput("pass tokenizer='<name>' with tokens= so the token table can be shared")
            table = parse_token_table(tokens, n_examples=ds.n_examples)
            token_rows = table.num_rows
        elif tokenizer is not None:
            found = self.tokenization(dataset, tokenizer, max_length if max_length else None)
            tok_id, token_rows = found.id, found.n_rows
        if pooling == "token":
            if token_rows is None:
                raise InvalidInput(
                    f"a token-level rep of site {site!r} needs its token table: pass tokens= and tokenizer=, "
                    "or tokenizer= of a table already stored for this dataset, or use an example-level "
                    "pooling ('mean', 'first', 'last') with one row per example")
            expected = token_rows
        else:
            expected = ds.n_examples
        if n_rows is not None and n_rows != expected:
            raise InvalidInput(f"rep of site {site!r} declared {n_rows} rows; the {'token' if pooling == 'token' else 'example'} table has {expected}")
        if _check is not None:
            check_matrix(_check, n_rows=expected, what=f"array for site {site!r}")
            if not allow_nonfinite:
                check_finite(_check, what=f"activations at site {site!r}")
            check_range(_check, dtype, site)
        if dim < 1:
            raise InvalidInput(f"rep of site {site!r} must have at least one column")
        if table is not None:  # validated: now the token table may be stored
            tok_id = self.add_tokenization(dataset, str(tokenizer), table, max_length=max_length).id
        model = parse_name(model, "model", allow_slash=True)
        checkpoint = parse_name(checkpoint, "checkpoint")
        with self.catalog.session(), self.catalog.connect(write=True) as conn:
            return self._open_writer(conn, model, checkpoint, ds, site, pooling, tok_id, tokenizer, expected, dim,
                                     dtype, codec, layer, allow_nonfinite, overwrite, resume, ingest_run_id)

    def _open_writer(self: Store, conn: Any, model: str, checkpoint: str, ds: Any, site: str, pooling: str,
                     tok_id: int | None, tokenizer: str | None, expected: int, dim: int, dtype: str, codec: str,
                     layer: int | None, allow_nonfinite: bool, overwrite: bool, resume: bool,
                     ingest_run_id: int | None) -> RepWriter:
        """The catalog half of opening a writer, in the caller's transaction (one commit).

        Two statements when the checkpoint exists and the rep is new (the hot path of writing
        many reps): one query finds the checkpoint and any stored or unfinished rep of the same
        key, and draws the new rep's id when there is none; then the insert. Plain SQL text:
        these run once per rep, and duckdb-engine compiles SQLAlchemy Core statements afresh on
        every execution (it has no statement cache)."""
        params = {"model": model, "ckpt": checkpoint, "ds": ds.id, "site": site, "pooling": pooling, "tok": tok_id}
        found = conn.execute(_LOOKUP_TOK if tok_id is not None else _LOOKUP_NO_TOK, params).all()
        rows: list[Any] = []
        rep_id = None
        if not found:  # a new checkpoint (or model): created here, and no rep can refer to it yet
            ckpt_id, step = self._checkpoint_id(model, checkpoint)
        else:
            ckpt_id, step = found[0][0], found[0][1]
            ids = sorted(r[2] for r in found if r[2] is not None)
            if ids:  # a stored or unfinished rep of this key (rare): its whole record
                rows = list(conn.execute(sa.select(S.rep).where(S.rep.c.id.in_(ids)).order_by(S.rep.c.id)).mappings())
            else:  # the usual case: a new rep, whose id the lookup drew
                rep_id = found[0][3]
        layer = layer if layer is not None else layer_of_site(site)
        itemsize = 4 if dtype == "float32" else 2
        chunk_rows, shard_rows = A.layout(expected, dim, itemsize)
        complete = [r for r in rows if r["status"] == "complete"]
        writing = [r for r in rows if r["status"] == "writing"]
        if complete and not overwrite:
            raise AlreadyExists(
                f"rep {model}/{checkpoint}/{ds.name}/{site} ({pooling}) is already stored as rep "
                f"{complete[0]['id']}; complete reps are immutable: pass overwrite=True to replace it")
        replaces = complete[0]["id"] if complete else None
        for w in writing:
            if resume and w["n_rows"] == expected and w["dim"] == dim and w["dtype"] == dtype \
                    and w["codec"] == codec and w["replaces"] == replaces:
                return self._resume_writer(w, site, allow_nonfinite)
            conn.execute(S.rep.update().where(S.rep.c.id == w["id"]).values(status="abandoned"))
        if rep_id is None:
            rep_id = conn.execute(_NEXT_REP_ID).scalar_one()
        path = A.rep_path(rep_id)
        created = _now()
        conn.execute(_INSERT_REP, {
            "id": rep_id, "checkpoint_id": ckpt_id, "dataset_id": ds.id, "tokenization_id": tok_id, "site": site,
            "layer": layer, "pooling": pooling, "n_rows": expected, "dim": dim, "dtype": dtype, "status": "writing",
            "path": path, "chunk_rows": chunk_rows, "shard_rows": shard_rows, "codec": codec, "rows_written": 0,
            "replaces": replaces, "ingest_run_id": ingest_run_id, "created_at": created})
        for w in writing:
            A.delete_array(self._root, A.rep_path(w["id"]))
        array = A.create_array(self._root, rep_id, n_rows=expected, dim=dim, dtype=dtype, codec=codec,  # type: ignore[arg-type]
                               chunk_rows=chunk_rows, shard_rows=shard_rows)
        writer = RepWriter(self, rep_id, n_rows=expected, dim=dim, dtype=dtype, site=site, chunk_rows=chunk_rows,
                           shard_rows=shard_rows, array=array, start_row=0, stats=A.RowStats(dtype),
                           allow_nonfinite=allow_nonfinite, replaces=replaces)
        writer.info = RepInfo(rep_id, model, checkpoint, step, ds.name, ds.content_hash, site, layer, pooling,
                              expected, dim, dtype, "writing", path, chunk_rows, shard_rows, tok_id,
                              tokenizer, None, created)
        return writer

    def _resume_writer(self: Store, row: Any, site: str, allow_nonfinite: bool) -> RepWriter:
        import zarr

        array = zarr.open_array(self._root, path=A.checked_path(row["id"], row["path"]), mode="r+")
        stats = A.RowStats(row["dtype"])
        checksums = ChunkChecksums(row["chunk_rows"])
        done = int(row["rows_written"])
        for start in range(0, done, row["shard_rows"]):
            block = array[start: min(done, start + row["shard_rows"])]
            stats.update(block)
            checksums.update(block)
        return RepWriter(self, row["id"], n_rows=row["n_rows"], dim=row["dim"], dtype=row["dtype"], site=site,
                         chunk_rows=row["chunk_rows"], shard_rows=row["shard_rows"], array=array, start_row=done,
                         stats=stats, allow_nonfinite=allow_nonfinite, replaces=row["replaces"],
                         checksums=checksums)

    def rep(self: Store, rep_id: int) -> RepInfo:
        """The catalog record of rep ``rep_id`` (complete or not)."""
        with self.catalog.connect() as conn:
            row = conn.execute(sa.text(f"SELECT {_REP_COLS} {_REP_FROM} WHERE r.id = :id"), {"id": int(rep_id)}).first()
        if row is None:
            raise NotFound(f"no rep with id {rep_id} in {self.path}; list them with `actdb ls {self.path} reps`")
        return RepInfo(*row)

    def find_reps(self: Store, *, model: str | None = None, checkpoint: str | None = None, dataset: str | None = None,
                  site: str | None = None, pooling: str | None = None, status: str = "complete") -> list[RepInfo]:
        """Reps matching exact values (the query layer's ``db.reps`` adds globs and ranges)."""
        where, params = ["r.status = :status"], {"status": status}
        for col, value in (("m.name", model), ("c.name", checkpoint), ("d.name", dataset), ("r.site", site),
                           ("r.pooling", pooling)):
            if value is not None:
                key = col.replace(".", "_")
                where.append(f"{col} = :{key}")
                params[key] = value
        q = f"SELECT {_REP_COLS} {_REP_FROM} WHERE {' AND '.join(where)} ORDER BY m.name, c.step NULLS LAST, c.id, r.layer, r.site, r.id"
        with self.catalog.connect() as conn:
            return [RepInfo(*r) for r in conn.execute(sa.text(q), params).all()]

    def read_rep(self: Store, rep: int | RepInfo) -> A.RepArray:
        """A lazy handle on a complete rep's array (row slices read only their chunks)."""
        info = rep if isinstance(rep, RepInfo) else self.rep(rep)
        if info.status != "complete":
            raise NotFound(f"rep {info.id} is {info.status!r}, not complete; only complete reps can be read")
        return A.RepArray(self._root, info.path, rep_id=info.id, n_rows=info.n_rows, dim=info.dim,
                          dtype=info.dtype, chunk_rows=info.chunk_rows, shard_rows=info.shard_rows)

    def rep_meta(self: Store, rep_id: int) -> dict[str, Any]:
        with self.catalog.connect() as conn:
            row = conn.execute(sa.select(S.rep).where(S.rep.c.id == rep_id)).mappings().first()
        if row is None:
            raise NotFound(f"no rep with id {rep_id}")
        out = dict(row)
        out["meta"] = json.loads(out["meta"]) if out["meta"] else None
        return out
