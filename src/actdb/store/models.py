"""The ``model`` and ``checkpoint`` tables: one repository, the one place they are read and written."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from actdb.errors import AlreadyExists, NotFound, close_matches
from actdb.store import schema as S
from actdb.store.catalog import Catalog, insert_if_absent
from actdb.store.clock import now
from actdb.store.parse import check_utf8, parse_name
from actdb.store.records import CheckpointInfo, ModelInfo


def to_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def check_lookup(name: object, what: str) -> None:
    """A name to look up: one that no catalog can hold (a lone surrogate) is InvalidInput
    here, not a driver's encoding error."""
    if isinstance(name, str):
        check_utf8(name, f"{what} name {name!r:.80}")


def weights_mismatch(model: str, checkpoint: str, stored: str, given: str) -> str:
    """The message for new weights under a stored checkpoint's name: both hashes, and the
    ways out (another checkpoint or model name; or delete the stored checkpoint first)."""
    return (
        f"checkpoint {model}/{checkpoint} is stored with weights {stored}, but these weights hash to "
        f"{given}; stored activations are never replaced silently. Ingest the new weights under "
        "another checkpoint name (checkpoints={'NEW': PATH} / --checkpoint NEW=PATH) or another model "
        f"name (name= / --name), or remove checkpoint {checkpoint!r} of {model!r} from the store "
        "first (`actdb rm`), then ingest again")


def _model_info(row: Any) -> ModelInfo:
    return ModelInfo(id=row["id"], name=row["name"], family=row["family"], architecture=row["architecture"],
                     width=row["width"], depth=row["depth"])


class ModelRepository:
    """Models and their checkpoints in one store's catalog."""

    def __init__(self, catalog: Catalog, where: str):
        self.catalog = catalog
        self.where = where

    def add(self, name: str, *, family: str | None = None, architecture: str | None = None,
            width: int | None = None, depth: int | None = None, n_params: int | None = None,
            meta: dict[str, Any] | None = None) -> ModelInfo:
        """Register a model (idempotent: an existing model of that name is returned, with
        any newly given metadata filled in)."""
        name = parse_name(name, "model", allow_slash=True)
        given = {"family": family, "architecture": architecture, "width": width, "depth": depth,
                 "n_params": n_params, "meta": to_json(meta)}
        with self.catalog.connect(write=True) as conn:
            row = conn.execute(sa.select(S.model).where(S.model.c.name == name)).mappings().first()
            # insert-if-absent: a writer that loses a race to create it proceeds as if it had found it
            if row is None and not insert_if_absent(conn, S.model, {"name": name, "created_at": now(), **given},
                                                    ("name",)):
                row = conn.execute(sa.select(S.model).where(S.model.c.name == name)).mappings().one()
            if row is not None:
                fill = {k: v for k, v in given.items() if v is not None and row[k] is None}
                if fill:
                    conn.execute(S.model.update().where(S.model.c.id == row["id"]).values(**fill))
        return self.get(name)

    def get(self, name: str) -> ModelInfo:
        check_lookup(name, "model")
        with self.catalog.connect() as conn:
            row = conn.execute(sa.select(S.model).where(S.model.c.name == name)).mappings().first()
            if row is None:
                known = conn.execute(sa.select(S.model.c.name)).scalars().all()
                raise NotFound(f"no model named {name!r} in {self.where}; {close_matches(str(name), known)}")
        return _model_info(row)

    def all(self) -> list[ModelInfo]:
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.select(S.model).order_by(S.model.c.id)).mappings().all()
        return [_model_info(r) for r in rows]

    # ------------------------------------------------------------ checkpoints
    def add_checkpoint(self, model: str, name: str, *, step: int | None = None, tokens_seen: int | None = None,
                       weights_hash: str | None = None, source: str | None = None,
                       meta: dict[str, Any] | None = None) -> CheckpointInfo:
        """Register a checkpoint of ``model`` (created if new). Idempotent for equal
        arguments; a different ``weights_hash`` for an existing name is refused."""
        name = parse_name(name, "checkpoint")
        model_info = self.add(model)
        where = (S.checkpoint.c.model_id == model_info.id, S.checkpoint.c.name == name)
        with self.catalog.connect(write=True) as conn:
            row = conn.execute(sa.select(S.checkpoint).where(*where)).mappings().first()
            # insert-if-absent: a writer that loses a race to create it proceeds as if it had found it
            if row is None and not insert_if_absent(conn, S.checkpoint, dict(
                    model_id=model_info.id, name=name, step=step, tokens_seen=tokens_seen,
                    weights_hash=weights_hash, source=source, meta=to_json(meta), created_at=now()),
                    ("model_id", "name")):
                row = conn.execute(sa.select(S.checkpoint).where(*where)).mappings().one()
            if row is None:
                pass  # created here
            elif weights_hash is not None and row["weights_hash"] not in (None, weights_hash):
                raise AlreadyExists(weights_mismatch(model_info.name, name, row["weights_hash"], weights_hash))
            else:
                fill = {k: v for k, v in {"step": step, "tokens_seen": tokens_seen,
                                          "weights_hash": weights_hash, "source": source}.items()
                        if v is not None and row[k] is None}
                if fill:
                    conn.execute(S.checkpoint.update().where(S.checkpoint.c.id == row["id"]).values(**fill))
        return self.checkpoint(model, name)

    def checkpoint_id(self, model: str, name: str) -> tuple[int, int | None]:
        """(id, step) of checkpoint ``model/name``, creating both if new: one query when
        they exist (the hot path of writing many reps)."""
        q = (sa.select(S.checkpoint.c.id, S.checkpoint.c.step)
             .join(S.model, S.model.c.id == S.checkpoint.c.model_id)
             .where(S.model.c.name == model, S.checkpoint.c.name == name))
        with self.catalog.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            info = self.add_checkpoint(model, name)
            return info.id, info.step
        return row[0], row[1]

    def checkpoint(self, model: str, name: str) -> CheckpointInfo:
        found = [c for c in self.checkpoints(model) if c.name == name]
        if not found:
            known = [c.name for c in self.checkpoints(model)]
            raise NotFound(f"model {model!r} has no checkpoint {name!r}; {close_matches(name, known)}")
        return found[0]

    def checkpoints(self, model: str | None = None) -> list[CheckpointInfo]:
        """Checkpoints (of one model, or all), ordered by model then step; each names the
        earlier checkpoint of the same model with identical weights, if any."""
        check_lookup(model, "model")
        if model is not None:
            self.get(model)
        q = "SELECT checkpoint_id, model, checkpoint, step, tokens_seen, weights_hash, duplicate_of FROM checkpoints"
        params: dict[str, Any] = {}
        if model is not None:
            q += " WHERE model = :model"
            params["model"] = model
        q += " ORDER BY model, step NULLS LAST, checkpoint_id"
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.text(q), params).mappings().all()
        return [CheckpointInfo(id=r["checkpoint_id"], model=r["model"], name=r["checkpoint"], step=r["step"],
                               tokens_seen=r["tokens_seen"], weights_hash=r["weights_hash"],
                               duplicate_of=r["duplicate_of"]) for r in rows]

    def checkpoint_source(self, model: str, checkpoint: str) -> str | None:
        """Where the weights of ``model/checkpoint`` were loaded from (a path or Hub id), if recorded."""
        with self.catalog.connect() as conn:
            return conn.execute(sa.select(S.checkpoint.c.source).join(S.model, S.model.c.id == S.checkpoint.c.model_id)
                                .where(S.model.c.name == model, S.checkpoint.c.name == checkpoint)).scalar()

    def duplicate_checkpoints(self) -> list[CheckpointInfo]:
        """Checkpoints whose weights hash equals an earlier checkpoint's of the same model."""
        return [c for c in self.checkpoints() if c.duplicate_of is not None]
