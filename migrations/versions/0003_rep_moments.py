"""Per-rep moments cache, measure defaults, and (PostgreSQL) a lookup-only SQL dissim().

``rep_moments`` keeps each rep's own second moments per row space, so a plan that adds a
model to a comparison accumulates only the new reps' blocks and the cross terms.
``measure_default`` records each measure's default-parameter hash (written by the query
layer with the results); on PostgreSQL the function ``dissim(measure, rep_a, rep_b)`` reads
it to return the cached default-parameter value, or NULL, for BI tools connected to the
catalog directly (it never computes; ``db.sql`` computes missing values).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _pg_dissim(schema: str) -> str:
    q = '"' + schema.replace('"', '""') + '"'
    return f"""
    CREATE OR REPLACE FUNCTION {q}.dissim(measure text, rep_a bigint, rep_b bigint)
    RETURNS double precision LANGUAGE sql STABLE AS $fn$
      SELECT x.value FROM {q}.result x JOIN {q}.measure_default d
          ON d.measure = x.measure AND d.params_hash = x.params_hash
       WHERE x.measure = $1 AND x.subset_hash = 'all'
         AND ((x.rep_a = $2 AND x.rep_b = $3) OR (d.is_symmetric AND x.rep_a = $3 AND x.rep_b = $2))
       LIMIT 1
    $fn$"""


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence("rep_moments_id_seq")))
    op.create_table(
        "rep_moments",
        sa.Column("id", sa.Integer(), sa.Sequence("rep_moments_id_seq"), nullable=False),
        sa.Column("rep_id", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(), nullable=False),
        sa.Column("space_hash", sa.String(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("actdb_version", sa.String(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rep_id", "checksum", "space_hash", "n", name="uq_rep_moments_key"),
    )
    op.create_table(
        "measure_default",
        sa.Column("measure", sa.String(), nullable=False),
        sa.Column("params_hash", sa.String(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("is_symmetric", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("measure"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        schema = bind.exec_driver_sql("SELECT current_schema()").scalar()
        bind.exec_driver_sql(_pg_dissim(str(schema)))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql("DROP FUNCTION IF EXISTS dissim(text, bigint, bigint)")
    op.drop_table("measure_default")
    op.drop_table("rep_moments")
    op.execute(sa.schema.DropSequence(sa.Sequence("rep_moments_id_seq")))
