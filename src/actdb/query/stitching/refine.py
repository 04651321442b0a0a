"""Refining the stitch: Adam steps on the affine map through model B's remaining blocks, B frozen.

The loss refined is B's next-token loss when B is a causal LM; otherwise (a masked-LM or a
bare encoder) it is the mean squared difference between B's output with the stitch and B's
own output on the unmasked inputs — reconstruction, since masking would make the target random.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from actdb.query.stitching.fit import AffineMap
from actdb.query.stitching.inputs import Activations, Batch

if TYPE_CHECKING:
    import torch

    from actdb.models import LoadedModel
    from actdb.query.stitching.params import Objective


def refinement_loss(loaded: LoadedModel, mapped: torch.Tensor, layer: int, batch: Batch,
                    objective: Objective) -> torch.Tensor:
    """The scalar refined: B run from ``hidden.{layer}`` on ``mapped`` ``(b, T, d_B)``, scored by
    next-token loss (``next_token``) or by MSE to B's own output over real tokens (otherwise)."""
    import torch

    from actdb.models import forward, next_token_loss, run_tail

    out = run_tail(loaded, mapped, layer, batch.mask)
    if objective == "next_token":
        loss: torch.Tensor = next_token_loss(out, batch.ids, batch.mask)
        return loss
    with torch.no_grad():
        own = forward(loaded, batch.ids, batch.mask)
    sel = batch.mask.bool()
    loss = ((out[sel] - own[sel]) ** 2).mean()
    return loss


def refine(loaded: LoadedModel, start: AffineMap, batches: Sequence[Batch], layer: int, objective: Objective, *,
           activations: Activations, steps: int, lr: float, seed: int) -> tuple[AffineMap, list[float]]:
    """``steps`` Adam steps (learning rate ``lr``) on the map, each on a batch drawn with
    ``seed``; B's parameters are frozen. Returns the refined map and the loss before each step."""
    import torch

    for p in loaded.model.parameters():
        p.requires_grad_(False)
    if steps == 0:
        return start, []
    weight, bias = start.tensors(trainable=True)
    opt = torch.optim.Adam([weight, bias], lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        batch = batches[int(rng.integers(len(batches)))]
        loss = refinement_loss(loaded, activations(batch) @ weight + bias, layer, batch, objective)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(float(loss.detach()))
    return AffineMap(weight.detach().numpy(), bias.detach().numpy(), start.ridge_absolute), losses
