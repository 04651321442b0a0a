"""Fine-tuning a tiny pretrained causal LM into a classifier, keeping it a causal LM.

The classifier is the LM's backbone plus a linear head on the final-normed hidden state
of each text's last token. It is trained on the class loss plus a share of the
next-token loss on the same texts (``lm_weight``), so the saved checkpoint is still a
working ``GPTNeoXForCausalLM`` with a meaningful next-token loss: that is what lets
``stitching`` (which scores model B on its own training objective) run between two
classifiers. The head is saved next to the checkpoint (``classifier_head.safetensors``)
and the accuracies in ``metrics.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HEAD_FILE = "classifier_head.safetensors"
METRICS_FILE = "metrics.json"


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[Any, Any]:
    tokenizer.truncation_side = "left"  # the closing cue must survive truncation
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding="longest", return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _logits(lm: Any, head: Any, ids: Any, mask: Any, *, lm_loss: bool = False) -> tuple[Any, Any]:
    import torch

    out = lm(input_ids=ids, attention_mask=mask, output_hidden_states=True,
             labels=ids.masked_fill(mask == 0, -100) if lm_loss else None)
    hidden = out.hidden_states[-1]  # after the final layer norm
    last = mask.sum(1) - 1
    return head(hidden[torch.arange(len(ids)), last]), out.loss


def accuracy(lm: Any, head: Any, tokenizer: Any, texts: Sequence[str], labels: Sequence[int], *,
             max_length: int, batch_size: int = 64) -> float:
    import torch

    right = 0
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            ids, mask = _encode(tokenizer, texts[s: s + batch_size], max_length)
            logits, _ = _logits(lm, head, ids, mask)
            right += int((logits.argmax(-1) == torch.tensor(labels[s: s + batch_size])).sum())
    return right / max(1, len(texts))


def finetune(pretrained: Path, folder: Path, texts: Sequence[str], labels: Sequence[int], *,
             evals: dict[str, tuple[Sequence[str], Sequence[int]]], steps: int, batch_size: int = 16,
             lr: float = 1e-3, lm_weight: float = 0.5, max_length: int = 64, seed: int = 0) -> dict[str, Any]:
    """Fine-tune ``pretrained`` (a causal-LM checkpoint folder) on (texts, labels); save
    ``folder/checkpoint-{steps}`` as a causal LM (+ head, tokenizer) and return the
    metrics (accuracy on each of ``evals``), also written to ``folder/metrics.json``.
    Reuses a finished run (metrics present) as is."""
    done = folder / METRICS_FILE
    if done.exists():
        return dict(json.loads(done.read_text()))
    import torch
    import transformers as tf
    from safetensors.torch import save_file

    if folder.exists():
        shutil.rmtree(folder)  # an unfinished earlier run
    torch.manual_seed(seed)
    tokenizer = tf.AutoTokenizer.from_pretrained(pretrained)
    lm = tf.AutoModelForCausalLM.from_pretrained(pretrained)
    head = torch.nn.Linear(lm.config.hidden_size, 2)
    params = list(lm.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    y_all = torch.tensor(list(labels))
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(texts), generator=gen)
    lm.train()
    for step in range(steps):
        at = (step * batch_size) % max(1, len(texts) - batch_size + 1)
        if at < batch_size and step:
            order = torch.randperm(len(texts), generator=gen)
        idx = order[at: at + batch_size]
        ids, mask = _encode(tokenizer, [texts[int(i)] for i in idx], max_length)
        logits, lm_loss = _logits(lm, head, ids, mask, lm_loss=True)
        loss = torch.nn.functional.cross_entropy(logits, y_all[idx]) + lm_weight * lm_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
    lm.eval()
    head.eval()
    metrics: dict[str, Any] = {
        name: accuracy(lm, head, tokenizer, t, y, max_length=max_length) for name, (t, y) in evals.items()}
    out = folder / f"checkpoint-{steps}"
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_file({"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
              str(folder / HEAD_FILE))
    metrics.update(steps=steps, lr=lr, lm_weight=lm_weight, n_train=len(texts), pretrained=str(pretrained))
    done.write_text(json.dumps(metrics, indent=1))
    return metrics
