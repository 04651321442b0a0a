"""A dataset's identity is its texts: labels and splits leave ``content_hash`` alone.

Until 0003 ``dataset.content_hash`` hashed texts, labels and splits together, so two stores
holding the same texts, one labelled and one not, could not be compared rep against rep.
From 0004 it hashes the texts in order alone (the formula is unchanged for a dataset without
labels or splits: their hashes stay as they were). This revision recomputes the hash of every
dataset that has a label or a split; downgrade restores the old formula.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _hash(rows: list[Any], with_annotations: bool) -> str:
    """The content hash as actdb 0004 (texts) or 0001-0003 (texts, labels, splits) computes it:
    sha256 over length-prefixed parts, ``\\xff`` for a missing one. Frozen here on purpose."""
    h = hashlib.sha256()
    for text, label, split in rows:
        for part in (text, label if with_annotations else None, split if with_annotations else None):
            data = b"\xff" if part is None else str(part).encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return "sha256:" + h.hexdigest()


def _rehash(with_annotations: bool) -> None:
    bind = op.get_bind()
    annotated = bind.execute(sa.text(
        "SELECT DISTINCT dataset_id FROM example WHERE label IS NOT NULL OR split IS NOT NULL")).scalars().all()
    for dataset_id in annotated:
        rows = bind.execute(sa.text("SELECT text, label, split FROM example WHERE dataset_id = :d ORDER BY example"),
                            {"d": dataset_id}).all()
        bind.execute(sa.text("UPDATE dataset SET content_hash = :h WHERE id = :d"),
                     {"h": _hash(list(rows), with_annotations), "d": dataset_id})


def upgrade() -> None:
    _rehash(with_annotations=False)


def downgrade() -> None:
    _rehash(with_annotations=True)
