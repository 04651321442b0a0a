"""Evaluating the stitch: run model B from ``hidden.j`` on A's mapped activations of held-out
batches and score it against B's own run, by the objective of B's head.

- ``next_token`` (causal LM): next-token cross-entropy, summed over positions where both
  the token and the next are real;
- ``masked_lm`` (masked-LM head): masked-LM cross-entropy at the masked positions of
  deterministically masked inputs (:func:`masked_batches`); A is re-run on the masked inputs;
- ``output_mse`` (no head): the mean squared difference between B's final hidden states with
  and without the stitch (the stitched loss; B's own is 0), and their cosine, per real token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from actdb.errors import InvalidInput
from actdb.query.stitching.fit import AffineMap
from actdb.query.stitching.inputs import Activations, Batch

if TYPE_CHECKING:
    import torch

    from actdb.models import LoadedModel
    from actdb.query.stitching.params import Objective


@dataclass(frozen=True)
class Evaluation:
    """Sums over the ``n`` tokens scored: B's own loss, the stitched loss and (``output_mse``)
    the cosine between B's outputs with and without the stitch."""

    own_sum: float
    stitched_sum: float
    cosine_sum: float
    n: int

    @property
    def own_loss(self) -> float:
        """B's own loss per token (nats/token; 0 for ``output_mse``)."""
        return self.own_sum / self.n

    @property
    def stitched_loss(self) -> float:
        """B's loss per token with A's mapped activations spliced in (nats/token, or MSE)."""
        return self.stitched_sum / self.n

    @property
    def mean_cosine(self) -> float:
        return self.cosine_sum / self.n

    def __add__(self, other: Evaluation) -> Evaluation:
        return Evaluation(self.own_sum + other.own_sum, self.stitched_sum + other.stitched_sum,
                          self.cosine_sum + other.cosine_sum, self.n + other.n)


def masked_batches(batches: Iterable[Batch], tokenizer: Any, rate: float, seed: int) -> Iterator[Batch]:
    """The batches with ``rate`` of their real, non-special tokens replaced by [MASK]
    (deterministic in ``seed``), and their ``labels``."""
    from actdb.models import mask_tokens

    for batch in batches:
        ids, labels = mask_tokens(batch.ids, batch.mask, tokenizer, rate=rate, seed=seed)
        yield Batch(batch.rows, ids, batch.mask, labels)


def own_output(loaded: LoadedModel, batch: Batch, objective: Objective) -> float | torch.Tensor:
    """What B's own run contributes to a batch's score: its summed loss (``next_token``,
    ``masked_lm``), or its output ``(b, T, d_B)`` to compare with (``output_mse``)."""
    from actdb.models import forward, masked_lm_loss, next_token_loss

    out = forward(loaded, batch.ids, batch.mask)
    if objective == "next_token":
        return float(next_token_loss(out, batch.ids, batch.mask, reduction="sum"))
    if objective == "masked_lm":
        return float(masked_lm_loss(out, batch.labels, reduction="sum"))
    hidden: torch.Tensor = out
    return hidden


def score(stitched: torch.Tensor, own: float | torch.Tensor, batch: Batch, objective: Objective) -> Evaluation:
    """One batch's sums: B's output with the stitch ``stitched`` against ``own`` (:func:`own_output`)."""
    import torch

    from actdb.models import masked_lm_loss, next_token_loss

    if objective == "next_token":
        n = int((batch.mask[:, 1:].bool() & batch.mask[:, :-1].bool()).sum())
        return Evaluation(float(own), float(next_token_loss(stitched, batch.ids, batch.mask, reduction="sum")), 0.0, n)
    if objective == "masked_lm":
        if batch.labels is None:
            raise InvalidInput("the masked_lm objective scores masked batches (masked_batches), with labels")
        n = int((batch.labels != -100).sum())
        if not n:
            return Evaluation(0.0, 0.0, 0.0, 0)
        return Evaluation(float(own), float(masked_lm_loss(stitched, batch.labels, reduction="sum")), 0.0, n)
    sel = batch.mask.bool()
    st, ref = stitched[sel].float(), cast("torch.Tensor", own)[sel].float()
    return Evaluation(0.0, float(((st - ref) ** 2).mean(-1).sum()),
                      float(torch.nn.functional.cosine_similarity(st, ref, dim=-1).sum()), int(sel.sum()))


def evaluate(loaded: LoadedModel, stitch_map: AffineMap, batches: Iterable[Batch], layer: int, objective: Objective,
             *, activations: Activations, own_cache: list[Any] | None = None) -> Evaluation:
    """Score B (``loaded``) on ``batches`` with ``stitch_map`` of A's ``activations`` spliced in at
    ``hidden.{layer}``, against B's own run. ``own_cache``: B's own terms for these batches, in
    order, filled as they are computed (so a plan runs B itself once per set of batches)."""
    import torch

    from actdb.models import run_tail

    own_cache = [] if own_cache is None else own_cache
    weight, bias = stitch_map.tensors()
    total = Evaluation(0.0, 0.0, 0.0, 0)
    with torch.no_grad():
        for bi, batch in enumerate(batches):
            stitched = run_tail(loaded, activations(batch) @ weight + bias, layer, batch.mask)
            if bi == len(own_cache):
                own_cache.append(own_output(loaded, batch, objective))
            total += score(stitched, own_cache[bi], batch, objective)
    return total
