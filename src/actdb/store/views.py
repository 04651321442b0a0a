"""The flat SQL views, versioned with the schema revisions that create them.

A revision that changes a view adds a new ``VIEWS_<rev>`` dict here and calls
:func:`create_views` with its id; a downgrade recreates the previous revision's set.
Views are the stable contract for SQL users and BI tools: columns are only added.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

# Flat, name-joined views: the stable surface for SQL users and BI tools.
# Only complete reps are visible through them.
VIEWS_0001: dict[str, str] = {
    "models": """
        SELECT m.id AS model_id, m.name AS model, m.family, m.architecture, m.width, m.depth,
               m.n_params, m.meta, m.created_at,
               (SELECT count(*) FROM checkpoint c WHERE c.model_id = m.id) AS n_checkpoints
        FROM model m""",
    "checkpoints": """
        SELECT c.id AS checkpoint_id, m.name AS model, c.name AS checkpoint, c.step, c.tokens_seen,
               c.weights_hash, c.source, c.created_at,
               (SELECT min(c2.name) FROM checkpoint c2
                 WHERE c2.model_id = c.model_id AND c2.weights_hash = c.weights_hash
                   AND c2.id < c.id) AS duplicate_of
        FROM checkpoint c JOIN model m ON m.id = c.model_id""",
    "datasets": """
        SELECT d.id AS dataset_id, d.name AS dataset, d.content_hash AS dataset_hash,
               d.n_examples, d.meta, d.created_at
        FROM dataset d""",
    "examples": """
        SELECT d.name AS dataset, e.dataset_id, e.example, e.text, e.label, e.split, e.meta
        FROM example e JOIN dataset d ON d.id = e.dataset_id""",
    "tokens": """
        SELECT d.name AS dataset, t.dataset_id, t.tokenizer, t.max_length, k.tokenization_id,
               k."row", k.example, k.position, k.token_id, k.token, k.char_start, k.char_end,
               k.special
        FROM token k JOIN tokenization t ON t.id = k.tokenization_id
        JOIN dataset d ON d.id = t.dataset_id""",
    "reps": """
        SELECT r.id AS rep_id, m.name AS model, m.family, m.architecture, m.width, m.depth,
               c.name AS checkpoint, c.step, c.tokens_seen, d.name AS dataset,
               d.content_hash AS dataset_hash, t.tokenizer, r.site, r.layer, r.pooling,
               r.n_rows, r.dim, r.dtype, r.nbytes, r.checksum, r.stat_mean, r.stat_std,
               r.stat_absmax, r.created_at, r.completed_at
        FROM rep r JOIN checkpoint c ON c.id = r.checkpoint_id
        JOIN model m ON m.id = c.model_id
        JOIN dataset d ON d.id = r.dataset_id
        LEFT JOIN tokenization t ON t.id = r.tokenization_id
        WHERE r.status = 'complete'""",
    "results": """
        SELECT x.id AS result_id, x.measure, x.kind, x.value, x.stderr, x.n, x.rep_a, x.rep_b,
               x.params, x.params_hash, x.subset, x.subset_hash, x.seconds, x.extra,
               x.actdb_version, x.computed_at
        FROM result x""",
    "dissimilarities": """
        SELECT x.id AS result_id, x.measure, x.kind, x.value, x.stderr, x.n,
               ma.name AS model_a, ca.name AS checkpoint_a, ca.step AS step_a,
               ra.site AS site_a, ra.layer AS layer_a, ra.pooling AS pooling_a, x.rep_a,
               mb.name AS model_b, cb.name AS checkpoint_b, cb.step AS step_b,
               rb.site AS site_b, rb.layer AS layer_b, rb.pooling AS pooling_b, x.rep_b,
               da.name AS dataset, x.subset, x.params, x.extra, x.seconds, x.computed_at
        FROM result x
        JOIN rep ra ON ra.id = x.rep_a JOIN checkpoint ca ON ca.id = ra.checkpoint_id
        JOIN model ma ON ma.id = ca.model_id
        JOIN rep rb ON rb.id = x.rep_b JOIN checkpoint cb ON cb.id = rb.checkpoint_id
        JOIN model mb ON mb.id = cb.model_id
        JOIN dataset da ON da.id = ra.dataset_id""",
}


# 0002: results may refer to reps of attached stores (foreign_rep, as rep id -id);
# dissimilarities gains store_a / store_b ('local' or the other store's location).
_SIDES = """
    SELECT r.id AS rep_id, m.name AS model, c.name AS checkpoint, c.step, r.site, r.layer, r.pooling,
           d.name AS dataset, 'local' AS store
    FROM rep r JOIN checkpoint c ON c.id = r.checkpoint_id JOIN model m ON m.id = c.model_id
    JOIN dataset d ON d.id = r.dataset_id
    UNION ALL
    SELECT -f.id, f.model, f.checkpoint, f.step, f.site, f.layer, f.pooling, f.dataset, f.store_uri
    FROM foreign_rep f"""

VIEWS_0002: dict[str, str] = {
    **VIEWS_0001,
    "dissimilarities": f"""
        WITH sides AS ({_SIDES})
        SELECT x.id AS result_id, x.measure, x.kind, x.value, x.stderr, x.n,
               a.model AS model_a, a.checkpoint AS checkpoint_a, a.step AS step_a,
               a.site AS site_a, a.layer AS layer_a, a.pooling AS pooling_a, x.rep_a,
               b.model AS model_b, b.checkpoint AS checkpoint_b, b.step AS step_b,
               b.site AS site_b, b.layer AS layer_b, b.pooling AS pooling_b, x.rep_b,
               a.dataset, x.subset, x.params, x.extra, x.seconds, x.computed_at,
               a.store AS store_a, b.store AS store_b
        FROM result x JOIN sides a ON a.rep_id = x.rep_a JOIN sides b ON b.rep_id = x.rep_b""",
}

# 0006: cross-validated probes (``Selection.probe``), cached in ``result`` as measure
# ``probe:<method>`` (kind 'probe', rep_a = rep_b); the label and folds come from the params.
# ``JSON_FIELD(col, 'key')`` is written per dialect by :func:`create_views`.
VIEWS_0006: dict[str, str] = {
    **VIEWS_0002,
    "probes": f"""
        WITH sides AS ({_SIDES})
        SELECT x.id AS result_id, a.model, a.checkpoint, a.step, a.site, a.layer, a.pooling, a.dataset,
               JSON_FIELD(x.params, 'label') AS label, substr(x.measure, 7) AS method,
               x.value AS accuracy, x.n, CAST(JSON_FIELD(x.params, 'folds') AS INTEGER) AS folds,
               CAST(JSON_FIELD(x.extra, 'r2') AS DOUBLE PRECISION) AS r2,
               x.rep_a AS rep_id, a.store, x.subset, x.params, x.extra, x.seconds, x.computed_at
        FROM result x JOIN sides a ON a.rep_id = x.rep_a
        WHERE x.kind = 'probe'""",
}

VIEWS_BY_REVISION: dict[str, dict[str, str]] = {"0001": VIEWS_0001, "0002": VIEWS_0002, "0006": VIEWS_0006}

_JSON_FIELD = re.compile(r"JSON_FIELD\((\w+(?:\.\w+)?), '(\w+)'\)")
_JSON_BY_DIALECT = {"postgresql": r"(\1::json ->> '\2')"}  # DuckDB (and the default): json_extract_string


def _for_dialect(body: str, dialect: str) -> str:
    """``body`` with each ``JSON_FIELD(col, 'key')`` written as ``dialect`` reads a JSON text field."""
    return _JSON_FIELD.sub(_JSON_BY_DIALECT.get(dialect, r"json_extract_string(\1, '$.\2')"), body)


# Dependency order: views that read other views come last (none do yet).
def create_views(bind: sa.engine.Connection, revision: str) -> None:
    """Create (or replace) every view of ``revision``."""
    for name, body in VIEWS_BY_REVISION[revision].items():
        bind.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
        bind.exec_driver_sql(f"CREATE VIEW {name} AS {_for_dialect(body, bind.dialect.name)}")


def drop_views(bind: sa.engine.Connection, revision: str) -> None:
    """Drop every view of ``revision``."""
    for name in reversed(list(VIEWS_BY_REVISION[revision])):
        bind.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
