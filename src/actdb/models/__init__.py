"""The model adapter: load and run ``transformers`` models, name their sites, splice into them.

This is the one package that knows how a Hugging Face model is laid out. Ingest uses it
to capture activations; the query layer uses it for functional measures (model
stitching: an affine map into model B's residual stream, then B's remaining blocks).

- :mod:`~actdb.models.load`: :func:`load_model` (offline, safetensors first) and the
  :class:`LoadedModel` it returns, with its blocks, final norm and head.
- :mod:`~actdb.models.hashing`: content hashes of weights and tokenizers.
- :mod:`~actdb.models.sites`: site names (``hidden.N``, module paths and globs) and
  resolving them against a model.
- :mod:`~actdb.models.run`: forward passes with hooks: capture at sites, list every
  site, splice into the residual stream and run the rest (:func:`run_tail`).
- :mod:`~actdb.models.losses`: next-token and masked-LM losses, BERT-style masking.
- :mod:`~actdb.models.solu`: the SoLU activation, registered in transformers by
  :func:`load_model` (importing this package imports neither torch nor transformers,
  and patches nothing).

Sites: ``hidden.0`` is the input of the first block (the embeddings, after any embedding
norm/dropout), ``hidden.j`` the output of block ``j`` (1-based), so ``hidden.L`` is the
residual stream after the last block, *before* any final norm. (Hugging Face's
``hidden_states[-1]`` applies the final norm for decoders; to store that, name the norm
module as a site, e.g. ``gpt_neox.final_layer_norm``.) Any other site is a module path of
the model as loaded (``gpt_neox.layers.3.mlp.act``, ``encoder.layer.3.attention.output``),
captured with a forward hook: its output, or the first tensor of a tuple output.
"""

from actdb.models.hashing import tokenizer_hash, weights_hash
from actdb.models.load import (
    LoadedModel,
    check_model_folder,
    head_of_architecture,
    is_local,
    load_model,
    parse_device,
)
from actdb.models.losses import mask_tokens, masked_lm_loss, next_token_loss
from actdb.models.run import SAMPLE_TEXT, capture, forward, list_sites, run_tail
from actdb.models.sites import Site, resolve_sites, site_glob
from actdb.models.solu import register_solu

__all__ = [
    "SAMPLE_TEXT", "LoadedModel", "Site", "capture", "check_model_folder", "forward", "head_of_architecture",
    "is_local", "list_sites", "load_model", "mask_tokens", "masked_lm_loss", "next_token_loss", "parse_device",
    "register_solu", "resolve_sites", "run_tail", "site_glob", "tokenizer_hash", "weights_hash",
]
