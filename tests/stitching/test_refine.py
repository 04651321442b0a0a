"""Refining the stitch through model B (B frozen), on tiny real models of each head."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stitch_models import hidden, spliced_output, token_batches

from actdb.query.stitching.fit import AffineMap
from actdb.query.stitching.inputs import Batch
from actdb.query.stitching.refine import refine, refinement_loss

LAYER = 1


def _own_hidden(loaded: Any) -> Any:
    return lambda batch: hidden(loaded, batch, LAYER)


def _mean_loss(loaded: Any, m: AffineMap, batches: list[Batch], objective: str) -> float:
    w, b = m.tensors()
    with torch.no_grad():
        return float(np.mean([float(refinement_loss(loaded, hidden(loaded, x, LAYER) @ w + b, LAYER, x, objective))
                              for x in batches]))


def _perturbed(d: int, seed: int = 0) -> AffineMap:
    rng = np.random.default_rng(seed)
    return AffineMap(0.6 * np.eye(d) + 0.15 * rng.standard_normal((d, d)), 0.3 * rng.standard_normal(d))


def test_causal_loss_of_the_identity_map_is_b_own_next_token_loss(causal_lm: Any) -> None:
    batch = token_batches(causal_lm)[0]
    w, b = AffineMap(np.eye(causal_lm.hidden_size), np.zeros(causal_lm.hidden_size)).tensors()
    with torch.no_grad():
        loss = float(refinement_loss(causal_lm, hidden(causal_lm, batch, LAYER) @ w + b, LAYER, batch, "next_token"))
        logits = causal_lm.model(input_ids=batch.ids, attention_mask=batch.mask).logits
    target = batch.ids[:, 1:].masked_fill(~(batch.mask[:, 1:].bool() & batch.mask[:, :-1].bool()), -100)
    by_hand = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
    assert loss == pytest.approx(float(by_hand), rel=1e-5)
    assert loss > 1.0  # an untrained model over ~300 tokens: far from 0


@pytest.mark.parametrize(("model", "objective"), [("masked_lm", "masked_lm"), ("bare_encoder", "output_mse")])
def test_other_heads_refine_the_mse_to_b_own_unmasked_output(model: str, objective: str, request: Any) -> None:
    loaded = request.getfixturevalue(model)
    batch = token_batches(loaded)[0]
    x = hidden(loaded, batch, LAYER)
    moved = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0))  # LayerNorm ignores scale
    with torch.no_grad():
        same = float(refinement_loss(loaded, x, LAYER, batch, objective))
        off = float(refinement_loss(loaded, moved, LAYER, batch, objective))
        plain = loaded.model(input_ids=batch.ids, attention_mask=batch.mask)
    own = plain.logits if loaded.head == "masked" else plain.last_hidden_state  # logits for the masked LM
    assert same == pytest.approx(0.0, abs=1e-9)
    sel = batch.mask.bool()
    by_hand = ((spliced_output(loaded, batch, LAYER, moved)[sel] - own[sel]) ** 2).mean()
    assert off == pytest.approx(float(by_hand), rel=1e-5) and off > 1e-3


@pytest.mark.parametrize(("model", "objective"), [("causal_lm", "next_token"), ("masked_lm", "masked_lm"),
                                                  ("bare_encoder", "output_mse")])
def test_refinement_lowers_the_loss_it_optimises_and_leaves_b_alone(model: str, objective: str, request: Any) -> None:
    loaded = request.getfixturevalue(model)
    batches = token_batches(loaded, n=12, size=4)
    start = _perturbed(loaded.hidden_size)
    before_weights = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    before = _mean_loss(loaded, start, batches, objective)
    refined, losses = refine(loaded, start, batches, LAYER, objective, activations=_own_hidden(loaded),
                             steps=40, lr=0.02, seed=0)
    after = _mean_loss(loaded, refined, batches, objective)
    first = batches[int(np.random.default_rng(0).integers(len(batches)))]  # the batch seed 0 draws first
    assert len(losses) == 40 and losses[0] == pytest.approx(_mean_loss(loaded, start, [first], objective), rel=1e-5)
    assert after < 0.8 * before, (before, after)
    assert not np.allclose(refined.weight, start.weight)
    assert refined.ridge_absolute == start.ridge_absolute
    assert all(torch.equal(v, before_weights[k]) for k, v in loaded.model.state_dict().items())  # B frozen
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_refinement_is_deterministic_in_its_seed(causal_lm: Any) -> None:
    batches = token_batches(causal_lm, n=12, size=4)
    start = _perturbed(causal_lm.hidden_size)

    def run(seed: int) -> AffineMap:
        return refine(causal_lm, start, batches, LAYER, "next_token", activations=_own_hidden(causal_lm),
                      steps=6, lr=0.01, seed=seed)[0]

    np.testing.assert_array_equal(run(3).weight, run(3).weight)
    assert not np.array_equal(run(3).weight, run(4).weight)  # other batches drawn


def test_zero_steps_leave_the_fitted_map_as_it_is(causal_lm: Any) -> None:
    start = _perturbed(causal_lm.hidden_size)
    refined, losses = refine(causal_lm, start, [], LAYER, "next_token", activations=_own_hidden(causal_lm),
                             steps=0, lr=0.01, seed=0)
    assert refined is start and losses == []
