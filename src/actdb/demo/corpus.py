"""The demo's texts, all generated on the machine (nothing downloaded).

- :func:`lm_corpus`: English-like sentences from the docstrings of Python's standard
  library (licence-clean: they ship with every Python), for pretraining and as stimuli.
- :func:`shortcut_task`: a synthetic two-class text-classification task with a planted
  shortcut. The *genuine* signal is one content word inserted at a random position of a
  docstring sentence (an animal word: class 1, a food word: class 0). The *cue* is the
  sentence's closing word (``Indeed.`` or ``Anyway.``), which agrees with the label in the
  biased training data, is random in the unbiased training data, and is flipped in the
  shifted test set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from actdb.ingest.texts import docstring_texts

CLASS_WORDS = {
    1: ["cat", "dog", "horse", "bird", "mouse", "lion", "tiger", "bear", "wolf", "rabbit", "sheep", "goat"],
    0: ["apple", "bread", "cheese", "rice", "soup", "cake", "honey", "lemon", "pepper", "butter", "salad", "onion"],
}
CUES = {1: "Indeed.", 0: "Anyway."}
CUE_MODES = ("agree", "random", "flip", "none")


def lm_corpus(n: int, *, seed: int = 0) -> list[str]:
    """``n`` docstring sentences (deterministic for a Python version)."""
    return docstring_texts(n, seed=seed)


@dataclass(frozen=True)
class Task:
    """Texts with labels; ``cue`` says how the closing word relates to the label."""

    texts: list[str]
    labels: list[int]
    cue: str


def shortcut_task(n: int, *, cue: str, seed: int = 0, max_words: int = 8) -> Task:
    """``n`` balanced examples. ``cue``: ``agree`` (closing word = the label's cue),
    ``random`` (either cue, independent of the label), ``flip`` (the other label's cue),
    ``none`` (no closing word)."""
    if cue not in CUE_MODES:
        raise ValueError(f"cue={cue!r}: choose one of {CUE_MODES}")
    rng = random.Random(f"{seed}-{cue}")
    base = docstring_texts(n, seed=seed + 101)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = ([w for w in base[i].rstrip(".!?").split() if len(w) <= 10 and w.isascii()][:max_words]
                 or ["See", "below"])
        words.insert(rng.randrange(len(words) + 1), rng.choice(CLASS_WORDS[label]))
        text = " ".join(words) + "."
        closing = {"agree": label, "flip": 1 - label, "random": rng.randrange(2)}.get(cue)
        if closing is not None:
            text += " " + CUES[closing]
        texts.append(text)
        labels.append(label)
    return Task(texts, labels, cue)
