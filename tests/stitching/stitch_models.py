"""Tiny real models for the stitching tests: a GPT-NeoX causal LM, a BERT masked LM and a bare
BERT encoder (random weights, saved and loaded through ``actdb.models.load_model``), token
batches, and an independent splice (a forward hook) to compute stitched outputs by hand."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actdb.query.stitching.inputs import Batch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def texts(n: int = 80) -> list[str]:
    from actdb.ingest.texts import docstring_texts

    return docstring_texts(n, seed=5)


def save_causal(folder: Path, *, width: int = 32, layers: int = 2, steps: int = 60) -> Path:
    """``folder/checkpoint-{steps}``: a tiny GPT-NeoX trained ``steps`` steps, with its BPE tokenizer."""
    from actdb.demo.training import pythia_config, train_causal_lm, train_tokenizer

    tok = train_tokenizer(texts(), vocab_size=300)
    train_causal_lm(pythia_config(len(tok), width=width, layers=layers, heads=2), tok, texts(), folder,
                    checkpoint_steps=[steps], batch_size=8, seq_len=16, lr=4e-3)
    return folder / f"checkpoint-{steps}"


@functools.cache
def bert_tokenizer() -> Any:
    """A WordPiece tokenizer with BERT's special tokens ([MASK] included) over a fixed vocabulary
    (the texts' characters and most frequent words): the same in every process, unlike a trained one."""
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(w for t in texts() for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    frequent = sorted(words, key=lambda w: (-words[w], w))[:150]
    vocab = [*SPECIALS, *chars, *(f"##{c}" for c in chars), *(w for w in frequent if w not in chars)]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)


def save_bert(folder: Path, *, masked: bool = True, seed: int = 0, layers: int = 2, steps: int = 0) -> Path:
    """A tiny BERT (``BertForMaskedLM``, or the bare ``BertModel``) saved to ``folder``; a masked
    LM trained ``steps`` steps on masked-token prediction (15% of real tokens)."""
    import transformers as tf

    tok = bert_tokenizer()
    tok.save_pretrained(folder)
    arch = "BertForMaskedLM" if masked else "BertModel"
    config = tf.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64, architectures=[arch],
                           pad_token_id=tok.pad_token_id, initializer_range=0.3)  # sharper than at 0.02
    torch.manual_seed(seed)
    model = (tf.BertForMaskedLM if masked else tf.BertModel)(config)
    if masked and steps:
        enc = tok(texts(), truncation=True, max_length=24, padding="max_length", return_tensors="pt")
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        for step in range(steps):
            i = (step * 16) % (len(enc["input_ids"]) - 16)
            ids, mask = enc["input_ids"][i: i + 16], enc["attention_mask"][i: i + 16]
            chosen = mask.bool() & (torch.rand(ids.shape, generator=gen) < 0.15)
            loss = model(input_ids=ids.masked_fill(chosen, tok.mask_token_id), attention_mask=mask,
                         labels=ids.masked_fill(~chosen, -100)).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
    model.save_pretrained(folder)
    return folder


def token_batches(loaded: Any, n: int = 10, size: int = 4) -> list[Batch]:
    """Right-padded batches of ``n`` real texts (lengths differ, so padding is exercised)."""
    enc = [loaded.tokenizer(t, truncation=True, max_length=16 - i % 5)["input_ids"] for i, t in enumerate(texts(n))]
    out = []
    for s in range(0, n, size):
        group = enc[s: s + size]
        width = max(len(ids) for ids in group)
        ids = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for i, row in enumerate(group):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        out.append(Batch([np.arange(len(r)) for r in group], ids, mask))
    return out


def hidden(loaded: Any, batch: Batch, layer: int) -> torch.Tensor:
    """``hidden.{layer}`` of a model on a batch, from Hugging Face's ``hidden_states``."""
    with torch.no_grad():
        out = loaded.model(input_ids=batch.ids, attention_mask=batch.mask, output_hidden_states=True)
    return out.hidden_states[layer].float()


def spliced_output(loaded: Any, batch: Batch, layer: int, replacement: torch.Tensor) -> torch.Tensor:
    """The model's output (logits, or last hidden state) on ``batch`` with the output of block
    ``layer`` (1-based) replaced by ``replacement``: a forward hook on the whole model, not
    :func:`actdb.models.run_tail`, so it checks the splice independently."""
    block = loaded.model.get_submodule(loaded.blocks)[layer - 1]

    def replace(module: Any, args: Any, out: Any) -> Any:
        return replacement if isinstance(out, torch.Tensor) else (replacement, *out[1:])

    handle = block.register_forward_hook(replace)
    try:
        with torch.no_grad():
            out = loaded.model(input_ids=batch.ids, attention_mask=batch.mask)
    finally:
        handle.remove()
    return out.logits if loaded.head != "none" else out.last_hidden_state
