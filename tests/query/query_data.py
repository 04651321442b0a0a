"""Synthetic token-level reps for query tests: one model, three checkpoints, four layers,
activation-like rows, several chunks per rep (helpers shared by the query tests)."""

from __future__ import annotations

import numpy as np

import actdb

N_EX, TOK_PER_EX, DIM = 60, 9, 24
STEPS = {"step10": 10, "step100": 100, "final": 1000}
LABELS = ["pos" if i % 3 else "neg" for i in range(N_EX)]


def token_table() -> dict[str, np.ndarray]:
    ex = np.repeat(np.arange(N_EX), TOK_PER_EX)
    pos = np.tile(np.arange(TOK_PER_EX), N_EX)
    return {"example": ex, "position": pos, "token_id": (ex * 7 + pos) % 50,
            "char_start": pos * 2, "char_end": pos * 2 + 1}


def make_values(seed: int) -> dict[tuple[str, int], np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((N_EX * TOK_PER_EX, DIM))
    out = {}
    for ck, step in STEPS.items():
        h = base
        for layer in range(4):
            mix = np.eye(DIM) + rng.standard_normal((DIM, DIM)) * (0.3 + 0.2 * layer) / np.log10(step + 1)
            h = np.tanh(h @ mix) + 0.1 * rng.standard_normal(h.shape)
            out[(ck, layer)] = h.astype(np.float32)
    return out


def fill(db: actdb.Database, model: str = "m", seed: int = 0, dataset: str = "d") -> dict[tuple[str, int], np.ndarray]:
    texts = [" ".join(f"w{i}x{j}" for j in range(TOK_PER_EX // 2)) for i in range(N_EX)]
    db.add_dataset(dataset, texts, labels=LABELS)
    values = make_values(seed)
    with db.session():
        for ck, step in STEPS.items():
            db.add_checkpoint(model, ck, step=step)
            for layer in range(4):
                db.write_rep(model, ck, dataset, f"hidden.{layer}", values[(ck, layer)], tokens=token_table(),
                             tokenizer="tok", dtype="float32")
    return values
