"""The ``probes`` view: cross-validated linear probes (``Selection.probe``) cached in ``result``.

A probe's value is stored as a ``result`` row of measure ``probe:<method>`` (kind ``probe``,
``rep_a = rep_b``, the label, folds and penalty in ``params``); the view lists them by model,
checkpoint, step, site, layer and dataset. No table changes: downgrade drops the view.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from actdb.store.views import create_views, drop_views

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_views(op.get_bind(), "0006")


def downgrade() -> None:
    drop_views(op.get_bind(), "0006")
    create_views(op.get_bind(), "0002")
