"""A model's own training objectives, in nats per token: next-token cross-entropy for
causal LMs, BERT-style masking and masked-LM cross-entropy for encoders (the penalties
model stitching reports)."""

from __future__ import annotations

from typing import Any

from actdb.errors import InvalidInput


def next_token_loss(logits: Any, input_ids: Any, attention_mask: Any = None, *, reduction: str = "mean") -> Any:
    """Causal LM cross-entropy (nats/token) of predicting token t+1 from position t,
    over positions where both are real tokens. ``reduction``: mean | sum | none (per position, padded)."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1].float()
    target = input_ids[:, 1:].clone()
    if attention_mask is not None:
        valid = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
        target[~valid] = -100
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), target.reshape(-1),
                           ignore_index=-100, reduction=reduction)


def mask_tokens(input_ids: Any, attention_mask: Any, tokenizer: Any, *, rate: float = 0.15,
                seed: int = 0, special_mask: Any = None) -> tuple[Any, Any]:
    """Deterministic BERT-style masking: ``(masked_input_ids, labels)``; labels are -100
    except at the masked positions. Special tokens and padding are never masked."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(input_ids.shape, generator=gen).to(input_ids.device)
    eligible = attention_mask.bool()
    if special_mask is not None:
        eligible &= ~special_mask.bool()
    elif tokenizer is not None and getattr(tokenizer, "all_special_ids", None):
        eligible &= ~torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids, device=input_ids.device))
    chosen = eligible & (probs < rate)
    if tokenizer is None or tokenizer.mask_token_id is None:
        raise InvalidInput("masked-LM loss needs a tokenizer with a [MASK] token")
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return torch.where(chosen, torch.full_like(input_ids, tokenizer.mask_token_id), input_ids), labels


def masked_lm_loss(logits: Any, labels: Any, *, reduction: str = "mean") -> Any:
    """Masked-LM cross-entropy (nats/token) over positions whose label is not -100."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=-100, reduction=reduction)
