"""The SoLU activation and its registration in transformers as ``hidden_act="solu"``.

SoLU follows Elhage et al. 2022 ("Softmax Linear Units"): ``SoLU(x) = x · softmax(x)`` over
the MLP's hidden units, followed by a LayerNorm, here without learned scale and shift, so
it is a pure activation function that round-trips through ``save_pretrained`` /
``from_pretrained`` with ``hidden_act="solu"`` (actdb's demo models use it).

transformers looks activations up by name in a process-wide table; :func:`register_solu`
adds ``solu`` to it once. :func:`actdb.models.load_model` calls it, and so does the demo
before it builds a SoLU model: importing actdb patches nothing.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def solu(x: torch.Tensor) -> torch.Tensor:
    """``LayerNorm(x · softmax(x))`` over the last dimension (the LayerNorm without
    parameters); the output has the shape of ``x``."""
    import torch

    y = x * torch.softmax(x, dim=-1)
    return torch.nn.functional.layer_norm(y, y.shape[-1:])


@functools.cache
def register_solu() -> None:
    """Make ``hidden_act="solu"`` constructible by transformers: once per process (later
    calls do nothing); an activation already registered under that name is kept."""
    import torch
    from transformers import activations

    class SoLU(torch.nn.Module):
        """:func:`solu` as the module transformers instantiates for ``hidden_act="solu"``."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return solu(x)

    activations.ACT2CLS.setdefault("solu", SoLU)
    activations.ACT2FN.setdefault("solu", SoLU)  # ACT2FN is a copy of ACT2CLS, not a view
