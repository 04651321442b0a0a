"""Tiny trained checkpoints for ingest tests (GPT-NeoX, GPT-2, Llama), made offline."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def train_tokenizer(texts: list[str], folder: Path, vocab_size: int = 300) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", model_max_length=64)
    fast.save_pretrained(folder)
    return fast


def tiny_config(kind: str, vocab_size: int, *, width: int = 32, layers: int = 2, mlp: int | None = None) -> Any:
    import transformers as tf

    mlp = mlp or 2 * width
    if kind == "gpt_neox":
        return tf.GPTNeoXConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                                num_attention_heads=2, intermediate_size=mlp, max_position_embeddings=64,
                                rotary_pct=0.25, use_parallel_residual=True, hidden_act="gelu",
                                architectures=["GPTNeoXForCausalLM"], tie_word_embeddings=False)
    if kind == "gpt2":
        return tf.GPT2Config(vocab_size=vocab_size, n_embd=width, n_layer=layers, n_head=2, n_positions=64,
                             bos_token_id=0, eos_token_id=0, architectures=["GPT2LMHeadModel"])
    if kind == "llama":
        return tf.LlamaConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                              num_attention_heads=2, num_key_value_heads=1, intermediate_size=mlp,
                              max_position_embeddings=64, architectures=["LlamaForCausalLM"])
    raise ValueError(kind)


def make_sweep(kind: str, folder: Path, texts: list[str], *, steps: tuple[int, ...] = (0, 4, 8),
               width: int = 32, layers: int = 2, mlp: int | None = None, seed: int = 0) -> Path:
    """Train a tiny ``kind`` model, saving ``checkpoint-S`` for each S in ``steps``."""
    import torch
    import transformers as tf
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    folder.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(texts, folder / "_tokenizer")
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(tiny_config(kind, len(tok), width=width, layers=layers, mlp=mlp))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    enc = tok(texts[:64], truncation=True, max_length=32, padding="max_length", return_tensors="pt") \
        if tok.pad_token else None
    if enc is None:
        tok.pad_token = tok.eos_token
        enc = tok(texts[:64], truncation=True, max_length=32, padding="max_length", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    step = 0
    for target in steps:
        while step < target:
            i = (step * 8) % 64
            loss = model(input_ids=ids[i:i + 8], attention_mask=mask[i:i + 8], labels=labels[i:i + 8]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
        out = folder / f"checkpoint-{target}"
        model.save_pretrained(out)
        shutil.copytree(folder / "_tokenizer", out, dirs_exist_ok=True)
    shutil.rmtree(folder / "_tokenizer")
    return folder
