"""Making real checkpoints offline for the demo and the tests: a byte-level BPE tokenizer
trained on shipped text, tiny Pythia-architecture (GPT-NeoX) models with GeLU or SoLU MLPs
(:mod:`actdb.models.solu`), and a training loop that saves checkpoints at chosen
(log-spaced) steps. Nothing here downloads anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actdb.errors import InvalidInput
from actdb.models.solu import register_solu


def train_tokenizer(texts: Sequence[str], folder: Path | None = None, vocab_size: int = 512,
                    max_length: int = 128) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (saved to ``folder`` when given)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=max_length)
    if folder is not None:
        fast.save_pretrained(folder)
    return fast


def pythia_config(vocab_size: int, *, width: int = 64, layers: int = 4, act: str = "gelu", heads: int = 4,
                  max_positions: int = 128) -> Any:
    """A tiny GPT-NeoX (Pythia architecture) config; ``act``: ``gelu`` or ``solu``."""
    import transformers as tf

    if act not in ("gelu", "solu"):
        raise InvalidInput(f"act={act!r}: choose 'gelu' or 'solu'")
    if act == "solu":
        register_solu()  # so that from_config can build the SoLU MLPs
    # rotary embeddings on a quarter of each head, as in Pythia: the config's default
    # (``rotary_pct=0.25`` before transformers 5, ``partial_rotary_factor`` since), so not passed
    return tf.GPTNeoXConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=4 * width,
                            max_position_embeddings=max_positions, use_parallel_residual=True,
                            hidden_act=act, architectures=["GPTNeoXForCausalLM"], tie_word_embeddings=False,
                            bos_token_id=0, eos_token_id=0)


def log_spaced_steps(total: int, count: int) -> list[int]:
    """``count`` distinct steps from 0 to ``total``, spaced evenly in log(1 + step)."""
    steps = {0, total}
    for k in range(1, count - 1):
        steps.add(round(math.expm1(math.log1p(total) * k / (count - 1))))
    return sorted(steps)


def train_causal_lm(config: Any, tokenizer: Any, texts: Sequence[str], folder: Path, *,
                    checkpoint_steps: Sequence[int], batch_size: int = 16, seq_len: int = 64, lr: float = 3e-3,
                    seed: int = 0) -> list[Path]:
    """Train a causal LM from ``config`` on ``texts``, saving ``checkpoint-S`` (model +
    tokenizer, safetensors) at each step S in ``checkpoint_steps``. Returns the folders."""
    import torch
    import transformers as tf
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = tf.AutoModelForCausalLM.from_config(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    enc = tokenizer(list(texts), truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
    saved, step = [], 0
    for target in sorted(set(checkpoint_steps)):
        model.train()
        while step < target:
            at = (step * batch_size) % max(1, len(ids) - batch_size + 1)
            idx = order[at: at + batch_size]
            loss = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            step += 1
        out = folder / f"checkpoint-{target}"
        model.eval()
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        saved.append(out)
    return saved
