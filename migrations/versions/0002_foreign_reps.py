"""Reps of attached stores: cross-store results are cached in the local store.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from actdb.store.views import create_views, drop_views

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence("foreign_rep_id_seq")))
    op.create_table(
        "foreign_rep",
        sa.Column("id", sa.Integer(), sa.Sequence("foreign_rep_id_seq"), nullable=False),
        sa.Column("store_uri", sa.Text(), nullable=False),
        sa.Column("remote_rep_id", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("checkpoint", sa.String(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=True),
        sa.Column("pooling", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("store_uri", "remote_rep_id", "checksum", name="uq_foreign_rep"),
    )
    drop_views(op.get_bind(), "0001")
    create_views(op.get_bind(), "0002")


def downgrade() -> None:
    drop_views(op.get_bind(), "0002")
    op.drop_table("foreign_rep")
    op.execute(sa.schema.DropSequence(sa.Sequence("foreign_rep_id_seq")))
    create_views(op.get_bind(), "0001")
