"""Content hashes of a model's weights and of its tokenizer, the identity a checkpoint
and a tokenization are recorded under (``sha256:<hex>``)."""

from __future__ import annotations

import hashlib
from typing import Any

from actdb.errors import InvalidInput


def weights_hash(model: Any) -> str:
    """Content hash of a state dict: sha256 over (name, dtype, shape, bytes) in name order.

    Independent of file format and sharding: two checkpoints with equal tensors hash equal.
    """
    import torch

    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|".encode())
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def tokenizer_hash(tokenizer: Any) -> str:
    """Content hash of a fast tokenizer's definition (vocab, merges, normalizer, specials)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InvalidInput(f"tokenizer {type(tokenizer).__name__} is not a fast (Rust) tokenizer; actdb needs "
                           "one for character offsets: load it with use_fast=True or convert it")
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return "sha256:" + hashlib.sha256(copy.to_str().encode()).hexdigest()
