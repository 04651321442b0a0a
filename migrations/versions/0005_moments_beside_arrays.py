"""Cached per-rep moments move out of the catalog, beside the arrays.

Until 0004 each ``rep_moments`` row carried its one-rep Moments as an ``.npz`` blob in the
column ``data``: float64 d x d blocks that made the catalog the biggest file of a store
(a 1.6 GB store's ``catalog.duckdb`` held 487 MB of them) and slowed every catalog open.
From 0005 the row keeps only the key and metadata (rep, checksum, row space, n, dim, nbytes,
version, time) and the numbers live in the store's Zarr root at ``moments/NNNNNNNNN`` (the
row's id; see ``actdb.store.moments_files``).

Upgrade deletes every cached ``rep_moments`` row once and drops ``data``: the rows are a
cache, recomputed on demand by the next plan that needs them (values do not depend on what
was cached). Downgrade deletes the rows again (the moment groups left on disk are then
orphans of an older actdb: delete ``STORE/arrays/moments`` by hand, or run ``actdb verify
--repair`` after upgrading again) and restores the column.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM rep_moments"))
    op.drop_column("rep_moments", "data")


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM rep_moments"))
    op.add_column("rep_moments", sa.Column("data", sa.LargeBinary(), nullable=False))
