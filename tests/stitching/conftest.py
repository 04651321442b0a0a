"""Tiny loaded models shared by the stitching tests (built once per session, offline)."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def causal_lm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from stitch_models import save_causal

    from actdb.models import load_model

    return load_model(save_causal(tmp_path_factory.mktemp("causal")), dtype="float32")


@pytest.fixture(scope="session")
def bert_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two masked LMs (different random weights, one tokenizer) and a bare encoder."""
    from stitch_models import save_bert

    root = tmp_path_factory.mktemp("bert")
    return {"mlm_a": save_bert(root / "mlm_a", seed=1), "mlm_b": save_bert(root / "mlm_b", seed=2),
            "bare": save_bert(root / "bare", masked=False, seed=3)}


@pytest.fixture(scope="session")
def masked_lm(bert_folders: dict[str, Any]) -> Any:
    from actdb.models import load_model

    return load_model(bert_folders["mlm_b"], dtype="float32")


@pytest.fixture(scope="session")
def masked_lm_other(bert_folders: dict[str, Any]) -> Any:
    from actdb.models import load_model

    return load_model(bert_folders["mlm_a"], dtype="float32")


@pytest.fixture(scope="session")
def bare_encoder(bert_folders: dict[str, Any]) -> Any:
    from actdb.models import load_model

    return load_model(bert_folders["bare"], dtype="float32")
