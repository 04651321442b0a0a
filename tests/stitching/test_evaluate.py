"""Evaluating the stitch: each objective against losses computed by hand from the models' outputs,
with the splice done independently (a forward hook on the full model, not ``run_tail``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stitch_models import hidden, spliced_output, token_batches

from actdb.errors import InvalidInput
from actdb.query.stitching.evaluate import evaluate, masked_batches, score
from actdb.query.stitching.fit import AffineMap
from actdb.query.stitching.inputs import rerun_activations

LAYER = 1


def _map(d: int, seed: int = 0) -> AffineMap:
    rng = np.random.default_rng(seed)
    return AffineMap(np.eye(d) + 0.3 * rng.standard_normal((d, d)), 0.2 * rng.standard_normal(d))


def _mapped(m: AffineMap, x: torch.Tensor) -> torch.Tensor:
    w, b = m.tensors()
    return x @ w + b


def test_next_token_matches_cross_entropy_by_hand(causal_lm: Any) -> None:
    batches = token_batches(causal_lm, n=10, size=4)
    m = _map(causal_lm.hidden_size)
    ev = evaluate(causal_lm, m, batches, LAYER, "next_token", activations=lambda x: hidden(causal_lm, x, LAYER))
    own = stitched = 0.0
    n = 0
    for x in batches:
        target = x.ids[:, 1:].masked_fill(~(x.mask[:, 1:].bool() & x.mask[:, :-1].bool()), -100)
        with torch.no_grad():
            logits = causal_lm.model(input_ids=x.ids, attention_mask=x.mask).logits
        st_logits = spliced_output(causal_lm, x, LAYER, _mapped(m, hidden(causal_lm, x, LAYER)))
        own += float(F.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), reduction="sum"))
        stitched += float(F.cross_entropy(st_logits[:, :-1].flatten(0, 1), target.flatten(), reduction="sum"))
        n += int((target != -100).sum())
    assert ev.n == n == sum(int(x.mask.sum()) - len(x.rows) for x in batches)  # every real token but the last
    assert ev.own_loss == pytest.approx(own / n, rel=1e-5)
    assert ev.stitched_loss == pytest.approx(stitched / n, rel=1e-5)
    assert ev.stitched_loss > ev.own_loss + 0.05  # a wrong map costs B


def test_identity_stitch_of_b_into_itself_costs_nothing(causal_lm: Any) -> None:
    batches = token_batches(causal_lm, n=8, size=4)
    d = causal_lm.hidden_size
    ev = evaluate(causal_lm, AffineMap(np.eye(d), np.zeros(d)), batches, LAYER, "next_token",
                  activations=lambda x: hidden(causal_lm, x, LAYER))
    assert ev.stitched_loss == pytest.approx(ev.own_loss, abs=1e-5) and ev.own_loss > 1.0


def test_own_cache_is_used_and_filled(causal_lm: Any) -> None:
    batches = token_batches(causal_lm, n=8, size=4)
    m, act = _map(causal_lm.hidden_size), (lambda x: hidden(causal_lm, x, LAYER))
    cache: list[Any] = []
    first = evaluate(causal_lm, m, batches, LAYER, "next_token", activations=act, own_cache=cache)
    assert len(cache) == len(batches) and sum(cache) == pytest.approx(first.own_sum)
    again = evaluate(causal_lm, m, batches, LAYER, "next_token", activations=act, own_cache=[0.0, 0.0])
    assert again.own_loss == 0.0 and again.stitched_loss == pytest.approx(first.stitched_loss)  # B not re-run


def test_masked_batches_mask_real_non_special_tokens_deterministically(masked_lm: Any) -> None:
    tok = masked_lm.tokenizer
    batches = token_batches(masked_lm, n=8, size=4)
    batches[0].ids[0, 0] = tok.unk_token_id  # a special token: never masked
    got = list(masked_batches(batches, tok, 0.3, seed=7))
    again = list(masked_batches(batches, tok, 0.3, seed=7))
    for plain, x, y in zip(batches, got, again):
        assert torch.equal(x.ids, y.ids) and torch.equal(x.labels, y.labels)
        chosen = x.labels != -100
        assert torch.equal(x.ids[chosen], torch.full_like(x.ids[chosen], tok.mask_token_id))
        assert torch.equal(x.labels[chosen], plain.ids[chosen]) and torch.equal(x.ids[~chosen], plain.ids[~chosen])
        assert not chosen[~plain.mask.bool()].any()
    assert got[0].labels[0, 0] == -100
    n = sum(int((x.labels != -100).sum()) for x in got)
    assert 0.15 * sum(int(x.mask.sum()) for x in got) < n < 0.45 * sum(int(x.mask.sum()) for x in got)


def test_masked_lm_matches_the_loss_by_hand_with_a_rerun_on_the_masked_inputs(masked_lm: Any,
                                                                            masked_lm_other: Any) -> None:
    """A (another BERT) is re-run on the *masked* inputs; B is scored at the masked positions."""
    plain = token_batches(masked_lm, n=10, size=4)
    batches = list(masked_batches(plain, masked_lm.tokenizer, 0.25, seed=0))
    m = _map(masked_lm.hidden_size)
    ev = evaluate(masked_lm, m, batches, LAYER, "masked_lm", activations=rerun_activations(masked_lm_other, LAYER))
    own = stitched = 0.0
    for x in batches:
        with torch.no_grad():
            # Hugging Face's own MLM loss (mean over the labelled positions), times their count
            own_mean = masked_lm.model(input_ids=x.ids, attention_mask=x.mask, labels=x.labels).loss
        st_logits = spliced_output(masked_lm, x, LAYER, _mapped(m, hidden(masked_lm_other, x, LAYER)))
        own += float(own_mean) * int((x.labels != -100).sum())
        stitched += float(F.cross_entropy(st_logits.flatten(0, 1), x.labels.flatten(), reduction="sum"))
    n = sum(int((x.labels != -100).sum()) for x in batches)
    assert ev.n == n > 0
    assert ev.own_loss == pytest.approx(own / n, rel=1e-5)
    assert ev.stitched_loss == pytest.approx(stitched / n, rel=1e-5)
    # A's activations on the unmasked inputs would give another loss: the rerun is what is scored
    unmasked = {id(x): p for x, p in zip(batches, plain)}
    wrong = evaluate(masked_lm, m, batches, LAYER, "masked_lm",
                     activations=lambda x: hidden(masked_lm_other, unmasked[id(x)], LAYER))
    assert abs(wrong.stitched_loss - ev.stitched_loss) > 1e-3


def test_masked_lm_needs_masked_batches(masked_lm: Any) -> None:
    x = token_batches(masked_lm, n=2, size=2)[0]
    with pytest.raises(InvalidInput, match="masked batches"):
        score(torch.zeros(2, 2, 5), 0.0, x, "masked_lm")


def test_output_mse_and_cosine_by_hand(bare_encoder: Any) -> None:
    batches = token_batches(bare_encoder, n=10, size=4)
    m = _map(bare_encoder.hidden_size, seed=1)
    ev = evaluate(bare_encoder, m, batches, LAYER, "output_mse", activations=lambda x: hidden(bare_encoder, x, LAYER))
    sq = cos = 0.0
    for x in batches:
        with torch.no_grad():
            own = bare_encoder.model(input_ids=x.ids, attention_mask=x.mask).last_hidden_state
        st = spliced_output(bare_encoder, x, LAYER, _mapped(m, hidden(bare_encoder, x, LAYER)))
        for i, j in zip(*torch.nonzero(x.mask, as_tuple=True)):
            a, b = st[i, j].double(), own[i, j].double()
            sq += float(((a - b) ** 2).mean())
            cos += float(a @ b / (a.norm() * b.norm()))
    n = sum(int(x.mask.sum()) for x in batches)
    assert ev.n == n and ev.own_loss == 0.0
    assert ev.stitched_loss == pytest.approx(sq / n, rel=1e-5) and ev.stitched_loss > 1e-3
    assert ev.mean_cosine == pytest.approx(cos / n, rel=1e-5) and ev.mean_cosine < 0.999
    same = evaluate(bare_encoder, AffineMap(np.eye(32), np.zeros(32)), batches, LAYER, "output_mse",
                    activations=lambda x: hidden(bare_encoder, x, LAYER))
    assert same.stitched_loss == pytest.approx(0.0, abs=1e-9) and same.mean_cosine == pytest.approx(1.0, abs=1e-6)
