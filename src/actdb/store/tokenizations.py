"""The ``tokenization`` and ``token`` tables: token tables of datasets, shared by every rep of a tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from actdb.errors import AlreadyExists, NotFound, close_matches
from actdb.store import schema as S
from actdb.store.catalog import Catalog, bulk_insert, insert_if_absent
from actdb.store.clock import now
from actdb.store.datasets import DatasetRepository
from actdb.store.parse import parse_name
from actdb.store.records import TokenizationInfo
from actdb.store.tokens import TOKEN_COLUMNS, parse_token_table, token_table_hash


class TokenizationRepository:
    """Token tables: one per (dataset, tokenizer, max_length), row order = a token-level rep's rows."""

    def __init__(self, catalog: Catalog, datasets: DatasetRepository):
        self.catalog = catalog
        self.datasets = datasets

    def add(self, dataset: str, tokenizer: str, tokens: Any, *, max_length: int = 0,
                         tokenizer_hash: str | None = None, n_truncated: int = 0) -> TokenizationInfo:
        """Store the token table of ``dataset`` tokenized by ``tokenizer`` (row -> example,
        position, token id, token text, char span, special flag). Idempotent for equal content."""
        tokenizer = parse_name(tokenizer, "tokenizer", allow_slash=True)
        ds = self.datasets.get(dataset)
        table = parse_token_table(tokens, n_examples=ds.n_examples)
        content = token_table_hash(table)
        existing = self.find(ds.id, tokenizer, max_length)
        if existing is not None:
            if existing.content_hash != content:
                raise AlreadyExists(f"dataset {dataset!r} already has a different token table for tokenizer "
                                    f"{tokenizer!r} (max_length {max_length}); use another tokenizer name")
            return existing
        with self.catalog.connect(write=True) as conn:
            # insert-if-absent: a writer that loses a race to create it proceeds as if it had found it
            created = insert_if_absent(conn, S.tokenization, dict(
                dataset_id=ds.id, tokenizer=tokenizer, max_length=max_length, tokenizer_hash=tokenizer_hash,
                content_hash=content, n_rows=table.num_rows, n_truncated=n_truncated, created_at=now()),
                ("dataset_id", "tokenizer", "max_length"))
            tid = conn.execute(sa.select(S.tokenization.c.id).where(
                S.tokenization.c.dataset_id == ds.id, S.tokenization.c.tokenizer == tokenizer,
                S.tokenization.c.max_length == max_length)).scalar_one()
            if created:
                bulk_insert(conn, S.token, table.add_column(0, "tokenization_id",
                                                            pa.array(np.full(table.num_rows, tid, np.int32))))
        found = self.find(ds.id, tokenizer, max_length)
        if found is None or found.content_hash != content:
            raise AlreadyExists(f"dataset {dataset!r} already has a different token table for tokenizer "
                                f"{tokenizer!r} (max_length {max_length}); use another tokenizer name")
        return found

    def find(self, dataset_id: int, tokenizer: str, max_length: int | None) -> TokenizationInfo | None:
        q = sa.select(S.tokenization).where(S.tokenization.c.dataset_id == dataset_id,
                                            S.tokenization.c.tokenizer == tokenizer)
        if max_length is not None:
            q = q.where(S.tokenization.c.max_length == max_length)
        with self.catalog.connect() as conn:
            r = conn.execute(q.order_by(S.tokenization.c.id)).mappings().first()
        if r is None:
            return None
        return TokenizationInfo(id=r["id"], dataset_id=r["dataset_id"], tokenizer=r["tokenizer"],
                                max_length=r["max_length"], n_rows=r["n_rows"], content_hash=r["content_hash"],
                                n_truncated=r["n_truncated"])

    def get(self, dataset: str, tokenizer: str, max_length: int | None = None) -> TokenizationInfo:
        ds = self.datasets.get(dataset)
        found = self.find(ds.id, tokenizer, max_length)
        if found is None:
            with self.catalog.connect() as conn:
                known = conn.execute(sa.select(S.tokenization.c.tokenizer).where(
                    S.tokenization.c.dataset_id == ds.id)).scalars().all()
            raise NotFound(f"dataset {dataset!r} has no token table for tokenizer {tokenizer!r}; "
                           f"{close_matches(tokenizer, known)}")
        return found

    def token_table(self, tokenization_id: int) -> pa.Table:
        """The token table (row order) of a tokenization, as Arrow."""
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.select(S.token.c.row, S.token.c.example, S.token.c.position,
                                          S.token.c.token_id, S.token.c.token, S.token.c.char_start,
                                          S.token.c.char_end, S.token.c.special)
                                .where(S.token.c.tokenization_id == tokenization_id)
                                .order_by(S.token.c.row)).all()
        types = {"row": pa.int64(), **TOKEN_COLUMNS}
        cols: list[Sequence[Any]] = list(zip(*rows)) if rows else [[] for _ in types]
        return pa.table({n: pa.array(c, type=t) for (n, t), c in zip(types.items(), cols)})
