"""Initial schema: models, checkpoints, datasets, examples, tokenizations, tokens,
reps, results, ingest runs, and the flat views.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from actdb.store.views import create_views, drop_views

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQUENCES = ['dataset', 'model', 'result', 'checkpoint', 'ingest_run', 'tokenization', 'rep']


def upgrade() -> None:
    for name in SEQUENCES:
        op.execute(sa.schema.CreateSequence(sa.Sequence(f"{name}_id_seq")))
    op.create_table('dataset',
    sa.Column('id', sa.Integer(), sa.Sequence('dataset_id_seq'), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('content_hash', sa.String(), nullable=False),
    sa.Column('n_examples', sa.Integer(), nullable=False),
    sa.Column('meta', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('model',
    sa.Column('id', sa.Integer(), sa.Sequence('model_id_seq'), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('family', sa.String(), nullable=True),
    sa.Column('architecture', sa.String(), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('depth', sa.Integer(), nullable=True),
    sa.Column('n_params', sa.BigInteger(), nullable=True),
    sa.Column('meta', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('result',
    sa.Column('id', sa.Integer(), sa.Sequence('result_id_seq'), nullable=False),
    sa.Column('measure', sa.String(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('params_hash', sa.String(), nullable=False),
    sa.Column('params', sa.Text(), nullable=False),
    sa.Column('rep_a', sa.Integer(), nullable=False),
    sa.Column('rep_b', sa.Integer(), nullable=False),
    sa.Column('subset_hash', sa.String(), nullable=False),
    sa.Column('subset', sa.Text(), nullable=True),
    sa.Column('value', sa.Double(), nullable=False),
    sa.Column('stderr', sa.Double(), nullable=True),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.Column('seconds', sa.Double(), nullable=True),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('actdb_version', sa.String(), nullable=False),
    sa.Column('computed_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('measure', 'params_hash', 'rep_a', 'rep_b', 'subset_hash', name='uq_result_key')
    )
    op.create_table('checkpoint',
    sa.Column('id', sa.Integer(), sa.Sequence('checkpoint_id_seq'), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=True),
    sa.Column('tokens_seen', sa.BigInteger(), nullable=True),
    sa.Column('weights_hash', sa.String(), nullable=True),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('meta', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('model_id', 'name', name='uq_checkpoint_model_name')
    )
    op.create_table('example',
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('example', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('label', sa.String(), nullable=True),
    sa.Column('split', sa.String(), nullable=True),
    sa.Column('meta', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ),
    sa.PrimaryKeyConstraint('dataset_id', 'example')
    )
    op.create_table('ingest_run',
    sa.Column('id', sa.Integer(), sa.Sequence('ingest_run_id_seq'), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=True),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('args', sa.Text(), nullable=True),
    sa.Column('versions', sa.Text(), nullable=True),
    sa.Column('device', sa.String(), nullable=True),
    sa.Column('n_tokens', sa.BigInteger(), nullable=True),
    sa.Column('seconds', sa.Double(), nullable=True),
    sa.Column('tokens_per_s', sa.Double(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('tokenization',
    sa.Column('id', sa.Integer(), sa.Sequence('tokenization_id_seq'), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('tokenizer', sa.String(), nullable=False),
    sa.Column('max_length', sa.Integer(), nullable=False),
    sa.Column('tokenizer_hash', sa.String(), nullable=True),
    sa.Column('content_hash', sa.String(), nullable=False),
    sa.Column('n_rows', sa.BigInteger(), nullable=False),
    sa.Column('n_truncated', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dataset_id', 'tokenizer', 'max_length', name='uq_tokenization_key')
    )
    op.create_table('rep',
    sa.Column('id', sa.Integer(), sa.Sequence('rep_id_seq'), nullable=False),
    sa.Column('checkpoint_id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('tokenization_id', sa.Integer(), nullable=True),
    sa.Column('site', sa.String(), nullable=False),
    sa.Column('layer', sa.Integer(), nullable=True),
    sa.Column('pooling', sa.String(), nullable=False),
    sa.Column('n_rows', sa.BigInteger(), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('dtype', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('path', sa.String(), nullable=False),
    sa.Column('chunk_rows', sa.Integer(), nullable=False),
    sa.Column('shard_rows', sa.Integer(), nullable=False),
    sa.Column('codec', sa.String(), nullable=False),
    sa.Column('rows_written', sa.BigInteger(), nullable=False),
    sa.Column('checksum', sa.String(), nullable=True),
    sa.Column('nbytes', sa.BigInteger(), nullable=True),
    sa.Column('stat_mean', sa.Double(), nullable=True),
    sa.Column('stat_std', sa.Double(), nullable=True),
    sa.Column('stat_min', sa.Double(), nullable=True),
    sa.Column('stat_max', sa.Double(), nullable=True),
    sa.Column('stat_absmax', sa.Double(), nullable=True),
    sa.Column('n_nonfinite', sa.BigInteger(), nullable=True),
    sa.Column('replaces', sa.Integer(), nullable=True),
    sa.Column('ingest_run_id', sa.Integer(), nullable=True),
    sa.Column('meta', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoint.id'], ),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ),
    sa.ForeignKeyConstraint(['ingest_run_id'], ['ingest_run.id'], ),
    sa.ForeignKeyConstraint(['tokenization_id'], ['tokenization.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('token',
    sa.Column('tokenization_id', sa.Integer(), nullable=False),
    sa.Column('row', sa.BigInteger(), nullable=False),
    sa.Column('example', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('token', sa.Text(), nullable=True),
    sa.Column('char_start', sa.Integer(), nullable=True),
    sa.Column('char_end', sa.Integer(), nullable=True),
    sa.Column('special', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['tokenization_id'], ['tokenization.id'], ),
    sa.PrimaryKeyConstraint('tokenization_id', 'row')
    )

    create_views(op.get_bind(), "0001")


def downgrade() -> None:
    drop_views(op.get_bind(), "0001")
    for name in ['token', 'rep', 'tokenization', 'ingest_run', 'example', 'checkpoint', 'result', 'model', 'dataset']:
        op.drop_table(name)
    for name in SEQUENCES:
        op.execute(sa.schema.DropSequence(sa.Sequence(f"{name}_id_seq")))
