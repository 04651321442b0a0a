"""Ingest bookkeeping in the catalog: ``ingest_run`` records and tokenizer look-up by hash.

Plain functions over a :class:`~actdb.store.store.Store` (the ingest layer calls them;
nothing outside ``actdb.store`` touches the catalog).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from actdb.errors import NotFound
from actdb.store import schema as S

if TYPE_CHECKING:
    from actdb.store.store import Store


def start_ingest_run(store: Store, *, model: str, dataset: str, args: dict[str, Any], versions: dict[str, str],
                     device: str) -> int:
    """Record a starting ingest (status ``running``); returns its id."""
    from actdb.store.clock import now

    model_id = store.models.add(model).id
    dataset_id = store.datasets.get(dataset).id
    with store.catalog.connect(write=True) as conn:
        run_id = int(conn.execute(sa.select(sa.Sequence("ingest_run_id_seq").next_value())).scalar_one())
        conn.execute(S.ingest_run.insert().values(
            id=run_id, model_id=model_id, dataset_id=dataset_id, status="running",
            args=json.dumps(args, sort_keys=True, default=str), versions=json.dumps(versions, sort_keys=True),
            device=device, started_at=now()))
    return run_id


def finish_ingest_run(store: Store, run_id: int, *, status: str, n_tokens: int, seconds: float) -> None:
    """Close an ingest record: ``status`` (complete | failed | interrupted), tokens run, duration."""
    from actdb.store.clock import now

    with store.catalog.connect(write=True) as conn:
        conn.execute(S.ingest_run.update().where(S.ingest_run.c.id == run_id).values(
            status=status, n_tokens=n_tokens, seconds=seconds,
            tokens_per_s=(n_tokens / seconds) if seconds > 0 else None, finished_at=now()))


def ingest_runs(store: Store) -> list[dict[str, Any]]:
    """All ingest records, oldest first, with ``args`` and ``versions`` decoded."""
    with store.catalog.connect() as conn:
        rows = conn.execute(sa.select(S.ingest_run).order_by(S.ingest_run.c.id)).mappings().all()
    out = []
    for r in rows:
        d = dict(r)
        d["args"] = json.loads(d["args"]) if d["args"] else None
        d["versions"] = json.loads(d["versions"]) if d["versions"] else None
        out.append(d)
    return out


def ingest_run(store: Store, run_id: int) -> dict[str, Any]:
    for r in ingest_runs(store):
        if r["id"] == run_id:
            return r
    raise NotFound(f"no ingest run {run_id} in {store.path}")


def tokenizer_name_for(store: Store, tokenizer_hash: str) -> str | None:
    """The name under which a tokenizer with this content hash is already stored, if any
    (so every model sharing a tokenizer shares its token tables)."""
    with store.catalog.connect() as conn:
        return conn.execute(sa.select(S.tokenization.c.tokenizer)
                            .where(S.tokenization.c.tokenizer_hash == tokenizer_hash)
                            .order_by(S.tokenization.c.id).limit(1)).scalar()
