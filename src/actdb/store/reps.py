"""The ``rep`` table: opening rep writers, finding reps, opening their arrays. The one place rep rows are read."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import sqlalchemy as sa
import zarr.storage

from actdb.errors import AlreadyExists, InvalidInput, NotFound
from actdb.store import arrays as A
from actdb.store import schema as S
from actdb.store.catalog import Catalog
from actdb.store.checksums import ChunkChecksums
from actdb.store.clock import now
from actdb.store.codecs import StoredDtype
from actdb.store.datasets import DatasetRepository
from actdb.store.models import ModelRepository
from actdb.store.parse import as_numpy, check_finite, check_matrix, layer_of_site, parse_name, parse_pooling, parse_site
from actdb.store.records import RepRecord
from actdb.store.rep_writer import RepWriter, check_range
from actdb.store.tokenizations import TokenizationRepository
from actdb.store.tokens import parse_token_table

# The one query a rep record is read from (by column name; see rep_records).
_REP_SELECT = """SELECT r.id, m.name AS model, m.family, m.architecture, m.width, m.depth, c.name AS checkpoint,
    c.step, d.name AS dataset, d.content_hash AS dataset_hash, d.n_examples, r.site, r.layer, r.pooling, r.n_rows,
    r.dim, r.dtype, r.status, r.path, r.chunk_rows, r.shard_rows, r.tokenization_id, t.tokenizer, t.max_length,
    t.content_hash AS tokens_hash, r.checksum, r.created_at
FROM rep r JOIN checkpoint c ON c.id = r.checkpoint_id JOIN model m ON m.id = c.model_id
JOIN dataset d ON d.id = r.dataset_id LEFT JOIN tokenization t ON t.id = r.tokenization_id"""
_REP_ORDER = " ORDER BY m.name, c.step NULLS LAST, c.id, r.layer NULLS LAST, r.site, r.pooling, r.id"


def rep_records(conn: sa.Connection, where: str = "", params: dict[str, Any] | None = None, *,
                store: str = "local") -> list[RepRecord]:
    """Rep records matching a WHERE clause over the aliases r (rep), m, c, d, t, in the
    stable order of a selection (model, step, layer, site, pooling, id)."""
    q = _REP_SELECT + (f" WHERE {where}" if where else "") + _REP_ORDER
    return [RepRecord(**row, store=store) for row in conn.execute(sa.text(q), params or {}).mappings()]


# The statements of a rep write (see RepRepository._open_writer and RepWriter.finish).
_LOOKUP = """SELECT c.id AS checkpoint_id, c.step, r.id, CASE WHEN r.id IS NULL THEN nextval('rep_id_seq') END
    FROM checkpoint c JOIN model m ON m.id = c.model_id
    LEFT JOIN rep r ON r.checkpoint_id = c.id AND r.dataset_id = :ds AND r.site = :site AND r.pooling = :pooling
        AND r.tokenization_id {tok} AND r.status IN ('writing', 'complete')
    WHERE m.name = :model AND c.name = :ckpt"""  # few columns, no ORDER BY: each adds to a write's catalog cost
_LOOKUP_TOK = sa.text(_LOOKUP.format(tok="= :tok"))
_LOOKUP_NO_TOK = sa.text(_LOOKUP.format(tok="IS NULL"))
_NEXT_REP_ID = sa.text("SELECT nextval('rep_id_seq')")
_INSERT_COLS = ("id", "checkpoint_id", "dataset_id", "tokenization_id", "site", "layer", "pooling", "n_rows", "dim",
                "dtype", "status", "path", "chunk_rows", "shard_rows", "codec", "rows_written", "replaces",
                "ingest_run_id", "created_at")
_INSERT_REP = sa.text(f"INSERT INTO rep ({', '.join(_INSERT_COLS)}) "
                      f"VALUES ({', '.join(':' + c for c in _INSERT_COLS)})")


class RepRepository:
    """Reps of one store: the catalog rows (read into :class:`~actdb.store.records.RepRecord`)
    and their arrays under the store's array root."""

    def __init__(self, catalog: Catalog, root: zarr.storage.StoreLike, where: str, *, models: ModelRepository,
                 datasets: DatasetRepository, tokenizations: TokenizationRepository):
        self.catalog = catalog
        self.root = root
        self.where = where
        self.models = models
        self.datasets = datasets
        self.tokenizations = tokenizations

    def write(self, model: str, checkpoint: str, dataset: str, site: str, array: Any, *,
                  tokens: Any = None, tokenizer: str | None = None, pooling: str = "token",
                  dtype: str = "float16", max_length: int = 0, layer: int | None = None,
                  allow_nonfinite: bool = False, overwrite: bool = False, codec: str | None = None) -> RepRecord:
        """Store one rep: ``array`` is ``(n_rows, dim)``, numpy or torch, any float dtype.

        Token-level reps (``pooling="token"``) need their token table: pass ``tokens``
        (and a ``tokenizer`` name) or the ``tokenizer`` of a token table already stored
        for ``dataset``. Example-level reps (``mean``, ``first``, ``last``) have one row
        per example. Everything is validated before anything is written.
        """
        values = as_numpy(array, what=f"array for site {site!r}")
        with self.catalog.session():
            return self._write(model, checkpoint, dataset, site, values, tokens=tokens, tokenizer=tokenizer,
                                   pooling=pooling, dtype=dtype, max_length=max_length, layer=layer,
                                   allow_nonfinite=allow_nonfinite, overwrite=overwrite, codec=codec)

    def _write(self, model: str, checkpoint: str, dataset: str, site: str, values: np.ndarray, *,
                   tokens: Any, tokenizer: str | None, pooling: str, dtype: str, max_length: int,
                   layer: int | None, allow_nonfinite: bool, overwrite: bool, codec: str | None) -> RepRecord:
        writer = self.writer(model, checkpoint, dataset, site, n_rows=None, dim=values.shape[-1] if values.ndim else 0,
                                 tokens=tokens, tokenizer=tokenizer, pooling=pooling, dtype=dtype,
                                 max_length=max_length, layer=layer, allow_nonfinite=allow_nonfinite,
                                 overwrite=overwrite, codec=codec, resume=False, _check=values)
        with writer:
            writer.append(values)
        assert writer.info is not None
        return writer.info

    def writer(self, model: str, checkpoint: str, dataset: str, site: str, *, n_rows: int | None,
                   dim: int, tokens: Any = None, tokenizer: str | None = None, pooling: str = "token",
                   dtype: str = "float16", max_length: int = 0, layer: int | None = None,
                   allow_nonfinite: bool = False, overwrite: bool = False, codec: str | None = None,
                   resume: bool = True, ingest_run_id: int | None = None,
                   _check: np.ndarray | None = None) -> RepWriter:
        """A :class:`RepWriter` for streaming a rep in; with ``resume=True`` an interrupted
        write of the same rep continues where its last flushed shard ended."""
        site = parse_site(site)
        pooling = parse_pooling(pooling)
        stored_dtype = A.parse_dtype(dtype)
        codec = codec or A.DEFAULT_CODEC
        A.codec_chain(codec)
        ds = self.datasets.get(dataset)
        tok_id, token_rows, table = None, None, None
        if tokens is not None:
            if tokenizer is None:
                raise InvalidInput("pass tokenizer='<name>' with tokens= so the token table can be shared")
            table = parse_token_table(tokens, n_examples=ds.n_examples)
            token_rows = table.num_rows
        elif tokenizer is not None:
            found = self.tokenizations.get(dataset, tokenizer, max_length if max_length else None)
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
            table = "token" if pooling == "token" else "example"
            raise InvalidInput(f"rep of site {site!r} declared {n_rows} rows; the {table} table has {expected}")
        if _check is not None:
            check_matrix(_check, n_rows=expected, what=f"array for site {site!r}")
            if not allow_nonfinite:
                check_finite(_check, what=f"activations at site {site!r}")
            check_range(_check, stored_dtype, site)
        if dim < 1:
            raise InvalidInput(f"rep of site {site!r} must have at least one column")
        if table is not None:  # validated: now the token table may be stored
            tok_id = self.tokenizations.add(dataset, str(tokenizer), table, max_length=max_length).id
        model = parse_name(model, "model", allow_slash=True)
        checkpoint = parse_name(checkpoint, "checkpoint")
        with self.catalog.session(), self.catalog.connect(write=True) as conn:
            return self._open_writer(conn, model, checkpoint, ds, site, pooling, tok_id, tokenizer, expected, dim,
                                     stored_dtype, codec, layer, allow_nonfinite, overwrite, resume, ingest_run_id)

    def _open_writer(self, conn: Any, model: str, checkpoint: str, ds: Any, site: str, pooling: str,
                     tok_id: int | None, tokenizer: str | None, expected: int, dim: int, dtype: StoredDtype,
                     codec: str, layer: int | None, allow_nonfinite: bool, overwrite: bool, resume: bool,
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
            ckpt_id, step = self.models.checkpoint_id(model, checkpoint)
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
        created = now()
        conn.execute(_INSERT_REP, {
            "id": rep_id, "checkpoint_id": ckpt_id, "dataset_id": ds.id, "tokenization_id": tok_id, "site": site,
            "layer": layer, "pooling": pooling, "n_rows": expected, "dim": dim, "dtype": dtype, "status": "writing",
            "path": path, "chunk_rows": chunk_rows, "shard_rows": shard_rows, "codec": codec, "rows_written": 0,
            "replaces": replaces, "ingest_run_id": ingest_run_id, "created_at": created})
        for w in writing:
            A.delete_array(self.root, A.rep_path(w["id"]))
        array = A.create_array(self.root, rep_id, n_rows=expected, dim=dim, dtype=dtype, codec=codec,
                               chunk_rows=chunk_rows, shard_rows=shard_rows)
        writer = RepWriter(self.catalog, self.root, self.record, rep_id, n_rows=expected, dim=dim, dtype=dtype,
                           site=site, chunk_rows=chunk_rows, shard_rows=shard_rows, array=array, start_row=0,
                           stats=A.RowStats(dtype), allow_nonfinite=allow_nonfinite, replaces=replaces)
        # the record as far as the write knows it (model metadata is read when it finishes only if asked)
        writer.info = RepRecord(id=rep_id, model=model, checkpoint=checkpoint, step=step, dataset=ds.name,
                                dataset_hash=ds.content_hash, n_examples=ds.n_examples, site=site, layer=layer,
                                pooling=pooling, n_rows=expected, dim=dim, dtype=dtype, status="writing", path=path,
                                chunk_rows=chunk_rows, shard_rows=shard_rows, tokenization_id=tok_id,
                                tokenizer=tokenizer, created_at=created)
        return writer

    def _resume_writer(self, row: Any, site: str, allow_nonfinite: bool) -> RepWriter:
        import zarr

        array = zarr.open_array(self.root, path=A.checked_path(row["id"], row["path"]), mode="r+")
        stats = A.RowStats(row["dtype"])
        checksums = ChunkChecksums(row["chunk_rows"])
        done = int(row["rows_written"])
        for start in range(0, done, row["shard_rows"]):
            block = np.asarray(array[start: min(done, start + row["shard_rows"])])
            stats.update(block)
            checksums.update(block)
        return RepWriter(self.catalog, self.root, self.record, row["id"], n_rows=row["n_rows"], dim=row["dim"],
                         dtype=row["dtype"], site=site, chunk_rows=row["chunk_rows"], shard_rows=row["shard_rows"],
                         array=array, start_row=done, stats=stats, allow_nonfinite=allow_nonfinite,
                         replaces=row["replaces"], checksums=checksums)

    def record(self, rep_id: int) -> RepRecord:
        """The catalog record of rep ``rep_id`` (complete or not)."""
        with self.catalog.connect() as conn:
            found = rep_records(conn, "r.id = :id", {"id": int(rep_id)})
        if not found:
            raise NotFound(f"no rep with id {rep_id} in {self.where}; list them with `actdb ls {self.where} reps`")
        return found[0]

    def find(self, *, model: str | None = None, checkpoint: str | None = None, dataset: str | None = None,
             site: str | None = None, pooling: str | None = None, status: str = "complete",
             store: str = "local") -> list[RepRecord]:
        """Reps matching exact values (the query layer's ``db.reps`` adds globs and ranges)."""
        where, params = ["r.status = :status"], {"status": status}
        for col, value in (("m.name", model), ("c.name", checkpoint), ("d.name", dataset), ("r.site", site),
                           ("r.pooling", pooling)):
            if value is not None:
                key = col.replace(".", "_")
                where.append(f"{col} = :{key}")
                params[key] = value
        with self.catalog.connect() as conn:
            return rep_records(conn, " AND ".join(where), params, store=store)

    def open(self, rep: int | RepRecord) -> A.RepArray:
        """A lazy handle on a complete rep's array (row slices read only their chunks)."""
        info = rep if isinstance(rep, RepRecord) else self.record(rep)
        if info.status != "complete":
            raise NotFound(f"rep {info.id} is {info.status!r}, not complete; only complete reps can be read")
        return A.RepArray(self.root, info.path, rep_id=info.id, n_rows=info.n_rows, dim=info.dim,
                          dtype=info.dtype, chunk_rows=info.chunk_rows, shard_rows=info.shard_rows)

    def meta(self, rep_id: int) -> dict[str, Any]:
        with self.catalog.connect() as conn:
            row = conn.execute(sa.select(S.rep).where(S.rep.c.id == rep_id)).mappings().first()
        if row is None:
            raise NotFound(f"no rep with id {rep_id}")
        out = dict(row)
        out["meta"] = json.loads(out["meta"]) if out["meta"] else None
        return out
