"""The token table of a dataset under one fast tokenizer and ``max_length``.

Row order is the order of the token-level rep rows: example by example, position by
position; padding never appears. Character spans come from the tokenizer's offsets
(null for special tokens, which cover no text). Truncated texts are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from actdb.errors import InvalidInput

_CHUNK = 512  # texts tokenized per call (bounds the transient memory of one call)


@dataclass(frozen=True)
class TokenTable:
    """A dataset's tokens: the Arrow token table plus per-example offsets into its rows.

    ``starts[i]:starts[i + 1]`` are example ``i``'s rows; ``token_ids`` is ``(n_rows,)``.
    """

    table: pa.Table
    starts: np.ndarray  # (n_examples + 1,) int64
    token_ids: np.ndarray  # (n_rows,) int64
    n_truncated: int
    max_length: int

    @property
    def n_rows(self) -> int:
        return int(self.starts[-1])

    @property
    def n_examples(self) -> int:
        return len(self.starts) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)


def effective_max_length(tokenizer: Any, config: Any, max_length: int | None) -> int:
    """``max_length`` checked against the model's positions; default: the smaller of the
    tokenizer's ``model_max_length`` and the model's ``max_position_embeddings``."""
    text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    positions = getattr(text_cfg, "max_position_embeddings", None) or getattr(text_cfg, "n_positions", None)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max is not None and tok_max > 1_000_000:  # "no limit" sentinel of transformers
        tok_max = None
    if max_length is None:
        limits = [int(x) for x in (positions, tok_max) if x]
        if not limits:
            raise InvalidInput("the model declares no maximum length; pass max_length=")
        return min(limits)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise InvalidInput(f"max_length must be a positive integer, not {max_length!r}")
    if positions and max_length > positions:
        raise InvalidInput(f"max_length {max_length} exceeds the model's {positions} positions; "
                           f"use max_length <= {positions}")
    return max_length


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> TokenTable:
    """Tokenize ``texts`` (special tokens added, truncated to ``max_length``) into a token table.

    Raises :class:`InvalidInput` for a slow tokenizer or for texts that yield no token.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidInput(f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; actdb needs the "
                           "character offsets only fast (Rust) tokenizers give: load it with use_fast=True")
    ids: list[np.ndarray] = []
    starts = [0]
    begins: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    special: list[np.ndarray] = []
    tokens: list[str] = []
    truncated = 0
    for lo in range(0, len(texts), _CHUNK):
        enc = tokenizer(list(texts[lo: lo + _CHUNK]), truncation=True, max_length=max_length,
                        add_special_tokens=True, return_attention_mask=False)
        for e in enc.encodings:
            n = len(e.ids)
            ids.append(np.asarray(e.ids, dtype=np.int64))
            offsets = np.asarray(e.offsets, dtype=np.int32).reshape(n, 2)
            sp = np.asarray(e.special_tokens_mask, dtype=bool)
            begins.append(offsets[:, 0])
            ends.append(offsets[:, 1])
            special.append(sp)
            tokens.extend(e.tokens)
            starts.append(starts[-1] + n)
            truncated += bool(e.overflowing)
    lengths = np.diff(starts)
    if (lengths == 0).any():
        bad = np.flatnonzero(lengths == 0)
        shown = ", ".join(map(str, bad[:10].tolist()))
        raise InvalidInput(f"{len(bad)} text(s) give no tokens with this tokenizer (example {shown}); "
                           "such examples have no rows and no pooled vector: drop them")
    n = starts[-1]
    example = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    position = (np.arange(n) - np.repeat(np.asarray(starts[:-1]), lengths)).astype(np.int32)
    token_ids = np.concatenate(ids)
    sp_all = np.concatenate(special)
    table = pa.table({
        "example": pa.array(example),
        "position": pa.array(position),
        "token_id": pa.array(token_ids.astype(np.int32)),
        "token": pa.array(tokens, pa.string()),
        "char_start": pa.array(np.concatenate(begins), mask=sp_all),
        "char_end": pa.array(np.concatenate(ends), mask=sp_all),
        "special": pa.array(sp_all),
    })
    return TokenTable(table, np.asarray(starts, dtype=np.int64), token_ids, truncated, max_length)


def pad_batch(tokens: TokenTable, lo: int, hi: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(input_ids, attention_mask)``, both ``(hi - lo, longest)``, for examples lo..hi."""
    lengths = tokens.lengths()[lo:hi]
    width = int(lengths.max())
    ids = np.full((hi - lo, width), pad_id, dtype=np.int64)
    mask = np.arange(width)[None, :] < lengths[:, None]
    ids[mask] = tokens.token_ids[tokens.starts[lo]: tokens.starts[hi]]
    return ids, mask.astype(np.int64)
