"""Catalog tables (SQLAlchemy Core).

Base tables are singular (``model``, ``rep`` ...); the flat views users query are
plural (``models``, ``reps``, ``dissimilarities``) and are created by the Alembic
revisions from :data:`VIEWS`. The migrations, not ``metadata.create_all``, own the
schema: this module is the Python-side description the code queries through.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

metadata = sa.MetaData()


def _id(table: str) -> sa.Column[int]:
    return sa.Column("id", sa.Integer, sa.Sequence(f"{table}_id_seq"), primary_key=True)


def _now() -> sa.Column[datetime]:
    return sa.Column("created_at", sa.DateTime(timezone=False), nullable=False)


model = sa.Table(
    "model", metadata,
    _id("model"),
    sa.Column("name", sa.String, nullable=False, unique=True),
    sa.Column("family", sa.String),
    sa.Column("architecture", sa.String),
    sa.Column("width", sa.Integer),
    sa.Column("depth", sa.Integer),
    sa.Column("n_params", sa.BigInteger),
    sa.Column("meta", sa.Text),
    _now(),
)

checkpoint = sa.Table(
    "checkpoint", metadata,
    _id("checkpoint"),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("model.id"), nullable=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("step", sa.BigInteger),
    sa.Column("tokens_seen", sa.BigInteger),
    sa.Column("weights_hash", sa.String),
    sa.Column("source", sa.Text),
    sa.Column("meta", sa.Text),
    _now(),
    sa.UniqueConstraint("model_id", "name", name="uq_checkpoint_model_name"),
)

dataset = sa.Table(
    "dataset", metadata,
    _id("dataset"),
    sa.Column("name", sa.String, nullable=False, unique=True),
    sa.Column("content_hash", sa.String, nullable=False),
    sa.Column("n_examples", sa.Integer, nullable=False),
    sa.Column("meta", sa.Text),
    _now(),
)

example = sa.Table(
    "example", metadata,
    sa.Column("dataset_id", sa.Integer, sa.ForeignKey("dataset.id"), primary_key=True),
    sa.Column("example", sa.Integer, primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("label", sa.String),
    sa.Column("split", sa.String),
    sa.Column("meta", sa.Text),
)

tokenization = sa.Table(
    "tokenization", metadata,
    _id("tokenization"),
    sa.Column("dataset_id", sa.Integer, sa.ForeignKey("dataset.id"), nullable=False),
    sa.Column("tokenizer", sa.String, nullable=False),
    sa.Column("max_length", sa.Integer, nullable=False),  # 0 = no limit
    sa.Column("tokenizer_hash", sa.String),
    sa.Column("content_hash", sa.String, nullable=False),
    sa.Column("n_rows", sa.BigInteger, nullable=False),
    sa.Column("n_truncated", sa.Integer, nullable=False),
    _now(),
    sa.UniqueConstraint("dataset_id", "tokenizer", "max_length", name="uq_tokenization_key"),
)

token = sa.Table(
    "token", metadata,
    sa.Column("tokenization_id", sa.Integer, sa.ForeignKey("tokenization.id"), primary_key=True),
    sa.Column("row", sa.BigInteger, primary_key=True),
    sa.Column("example", sa.Integer, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("token_id", sa.Integer, nullable=False),
    sa.Column("token", sa.Text),
    sa.Column("char_start", sa.Integer),
    sa.Column("char_end", sa.Integer),
    sa.Column("special", sa.Boolean, nullable=False),
)

ingest_run = sa.Table(
    "ingest_run", metadata,
    _id("ingest_run"),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("model.id")),
    sa.Column("dataset_id", sa.Integer, sa.ForeignKey("dataset.id")),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("args", sa.Text),
    sa.Column("versions", sa.Text),
    sa.Column("device", sa.String),
    sa.Column("n_tokens", sa.BigInteger),
    sa.Column("seconds", sa.Double),
    sa.Column("tokens_per_s", sa.Double),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
)

rep = sa.Table(
    "rep", metadata,
    _id("rep"),
    sa.Column("checkpoint_id", sa.Integer, sa.ForeignKey("checkpoint.id"), nullable=False),
    sa.Column("dataset_id", sa.Integer, sa.ForeignKey("dataset.id"), nullable=False),
    sa.Column("tokenization_id", sa.Integer, sa.ForeignKey("tokenization.id")),
    sa.Column("site", sa.String, nullable=False),
    sa.Column("layer", sa.Integer),
    sa.Column("pooling", sa.String, nullable=False),
    sa.Column("n_rows", sa.BigInteger, nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("dtype", sa.String, nullable=False),
    sa.Column("status", sa.String, nullable=False),  # writing | complete | replaced
    sa.Column("path", sa.String, nullable=False),
    sa.Column("chunk_rows", sa.Integer, nullable=False),
    sa.Column("shard_rows", sa.Integer, nullable=False),
    sa.Column("codec", sa.String, nullable=False),
    sa.Column("rows_written", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.String),
    sa.Column("nbytes", sa.BigInteger),
    sa.Column("stat_mean", sa.Double),
    sa.Column("stat_std", sa.Double),
    sa.Column("stat_min", sa.Double),
    sa.Column("stat_max", sa.Double),
    sa.Column("stat_absmax", sa.Double),
    sa.Column("n_nonfinite", sa.BigInteger),
    sa.Column("replaces", sa.Integer),
    sa.Column("ingest_run_id", sa.Integer, sa.ForeignKey("ingest_run.id")),
    sa.Column("meta", sa.Text),
    _now(),
    sa.Column("completed_at", sa.DateTime),
)

result = sa.Table(
    "result", metadata,
    _id("result"),
    sa.Column("measure", sa.String, nullable=False),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("params_hash", sa.String, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("rep_a", sa.Integer, nullable=False),
    sa.Column("rep_b", sa.Integer, nullable=False),
    sa.Column("subset_hash", sa.String, nullable=False),
    sa.Column("subset", sa.Text),
    sa.Column("value", sa.Double, nullable=False),
    sa.Column("stderr", sa.Double),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("seconds", sa.Double),
    sa.Column("extra", sa.Text),
    sa.Column("actdb_version", sa.String, nullable=False),
    sa.Column("computed_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("measure", "params_hash", "rep_a", "rep_b", "subset_hash", name="uq_result_key"),
)


# Revision 0002: reps of attached stores that results refer to (as rep id -id).
foreign_rep = sa.Table(
    "foreign_rep", metadata,
    _id("foreign_rep"),
    sa.Column("store_uri", sa.Text, nullable=False),
    sa.Column("remote_rep_id", sa.Integer, nullable=False),
    sa.Column("checksum", sa.String, nullable=False),
    sa.Column("model", sa.String, nullable=False),
    sa.Column("checkpoint", sa.String, nullable=False),
    sa.Column("step", sa.BigInteger),
    sa.Column("dataset", sa.String, nullable=False),
    sa.Column("site", sa.String, nullable=False),
    sa.Column("layer", sa.Integer),
    sa.Column("pooling", sa.String, nullable=False),
    _now(),
    sa.UniqueConstraint("store_uri", "remote_rep_id", "checksum", name="uq_foreign_rep"),
)


# Revision 0003: per-rep moments (the executor's cache of each rep's own statistics) and the
# default parameters of each measure (what the lookup-only SQL function dissim() reads).
rep_moments = sa.Table(
    "rep_moments", metadata,
    _id("rep_moments"),
    sa.Column("rep_id", sa.Integer, nullable=False),  # as in result: a local rep id, or -foreign_rep.id
    sa.Column("checksum", sa.String, nullable=False),
    sa.Column("space_hash", sa.String, nullable=False),  # the row space (subset, alignment)
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    # the numbers: Zarr group moments/NNNNNNNNN (this row's id) beside the arrays (revision 0005)
    sa.Column("nbytes", sa.BigInteger, nullable=False),
    sa.Column("actdb_version", sa.String, nullable=False),
    sa.Column("computed_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("rep_id", "checksum", "space_hash", "n", name="uq_rep_moments_key"),
)

measure_default = sa.Table(
    "measure_default", metadata,
    sa.Column("measure", sa.String, primary_key=True),
    sa.Column("params_hash", sa.String, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("is_symmetric", sa.Boolean, nullable=False),
)
