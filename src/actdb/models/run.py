"""Running a loaded model with forward hooks: its output (:func:`forward`), the tensors at
chosen sites (:func:`capture`), the shape of every site (:func:`list_sites`), and the rest
of the model from a spliced-in residual stream (:func:`run_tail`, for model stitching).

A module site's value is its output, or the first tensor of a tuple output. Call these
under ``torch.inference_mode()`` (or ``no_grad``) unless gradients are wanted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actdb.errors import InvalidInput
from actdb.models.load import LoadedModel
from actdb.models.sites import Site

SAMPLE_TEXT = "The quick brown fox jumps over the lazy dog."


class _Done(Exception):
    """Raised from a hook once every requested site is captured (skips the rest)."""


def forward(loaded: LoadedModel, input_ids: Any, attention_mask: Any) -> Any:
    """The model's output tensor: logits when it has an LM head, else the last hidden state."""
    return _output(loaded, input_ids=input_ids, attention_mask=attention_mask)


def capture(loaded: LoadedModel, input_ids: Any, attention_mask: Any, sites: Sequence[Site]) -> dict[str, Any]:
    """Run the model on a batch and return ``{site: tensor (batch, seq, ...)}``.

    Only as much of the model runs as the sites need (the forward stops once the last
    site fires). Call under ``torch.inference_mode()``.
    """
    got: dict[str, Any] = {}
    wanted = {s.name for s in sites}
    handles = []

    def keep(name: str, value: Any) -> None:
        t = _first_tensor(value)
        if t is None:
            raise InvalidInput(f"site {name!r}: module output is {type(value).__name__}, not a tensor; "
                               "choose a module that returns a tensor")
        got.setdefault(name, t)
        if wanted.issubset(got):
            raise _Done

    for s in sites:
        if s.kind == "hidden" and s.layer == 0:
            handles.append(loaded.block(0).register_forward_pre_hook(
                lambda _mod, args, kwargs, n=s.name: keep(n, _input_hidden(args, kwargs)), with_kwargs=True))
        elif s.kind == "hidden":
            handles.append(loaded.block(s.layer - 1).register_forward_hook(  # type: ignore[operator]
                lambda _mod, _args, out, n=s.name: keep(n, out)))
        else:
            handles.append(loaded.model.get_submodule(s.module).register_forward_hook(
                lambda _mod, _args, out, n=s.name: keep(n, out)))
    inside = all(s.kind == "hidden" or _within_base(loaded, s.module) for s in sites)  # type: ignore[arg-type]
    runner = loaded.model.base_model if inside else loaded.model
    try:
        runner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False) \
            if loaded.head == "causal" else runner(input_ids=input_ids, attention_mask=attention_mask)
    except _Done:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = wanted - set(got)
    if missing:
        raise InvalidInput(f"site(s) {sorted(missing)} never ran in the forward pass of {loaded.architecture}; "
                           "pick modules that the model calls")
    return got


def list_sites(loaded: LoadedModel, text: str = SAMPLE_TEXT) -> list[dict[str, Any]]:
    """Every site of ``loaded`` that ingest can store, from one forward pass on ``text``.

    One row per site, in model order: ``site`` (``hidden.N``, then module paths),
    ``layer`` (the number stored with it and filtered by ``layer=``: ``hidden.N`` -> N; a
    module inside block k, path index k counted from 0, -> k + 1, the block's output being
    ``hidden.k+1``; modules outside the blocks -> None), ``dim`` (the stored width),
    ``shape`` (the output's shape on ``text``: ``(1, tokens, ...)``) and ``module`` (its
    class). Modules whose output is not one row per token (pooled heads, rotary tables) are
    left out: they cannot be stored per token.
    """
    import torch

    from actdb.store.parse import layer_of_site

    enc = loaded.tokenizer(text, return_tensors="pt")
    ids, mask = enc["input_ids"].to(loaded.device), enc["attention_mask"].to(loaded.device)
    n_tok = int(ids.shape[1])
    shapes: dict[str, tuple[int, ...]] = {}
    kinds: dict[str, str] = {}
    handles = []
    for name, module in loaded.model.named_modules():
        if not name:
            continue
        kinds[name] = type(module).__name__

        def hook(_mod: Any, _args: Any, out: Any, n: str = name) -> None:
            t = _first_tensor(out)
            if t is not None and n not in shapes:
                shapes[n] = tuple(int(x) for x in t.shape)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            forward(loaded, ids, mask)
    finally:
        for h in handles:
            h.remove()
    width = loaded.hidden_size
    rows: list[dict[str, Any]] = [
        {"site": f"hidden.{k}", "layer": k, "dim": width, "shape": str((1, n_tok, width)),
         "module": "embeddings (input of block 0)" if k == 0 else f"output of block {k - 1} (0-based)"}
        for k in range(loaded.n_layers + 1)]
    for name in loaded.module_names():
        shape = shapes.get(name)
        if shape is None or len(shape) < 3 or shape[:2] != (1, n_tok):
            continue
        dim = 1
        for x in shape[2:]:
            dim *= x
        rows.append({"site": name, "layer": layer_of_site(name), "dim": dim, "shape": str(shape),
                     "module": kinds[name]})
    return rows


def run_tail(loaded: LoadedModel, hidden_states: Any, start_layer: int, attention_mask: Any = None) -> Any:
    """Splice ``hidden_states`` in at site ``hidden.{start_layer}`` and run the rest of the model.

    ``hidden_states``: ``(batch, seq, hidden_size)`` on the model's device; ``attention_mask``
    ``(batch, seq)`` with 1 for real tokens (right padding). Returns what :func:`forward`
    returns (logits, or the last hidden state for a bare model), ``(batch, seq, ...)``.
    Blocks before ``start_layer`` are skipped (temporarily detached); not thread-safe.
    """
    import torch

    L = loaded.n_layers
    if not 0 <= start_layer <= L:
        raise InvalidInput(f"start_layer {start_layer} is out of range 0..{L} for {loaded.architecture}")
    if hidden_states.ndim != 3 or hidden_states.shape[-1] != loaded.hidden_size:
        raise InvalidInput(f"hidden_states must be (batch, seq, {loaded.hidden_size}); "
                           f"got {tuple(hidden_states.shape)}")
    b, t, _ = hidden_states.shape
    if attention_mask is None:
        attention_mask = torch.ones(b, t, dtype=torch.long, device=hidden_states.device)
    parent_name, _, attr = loaded.blocks.rpartition(".")
    parent = loaded.model.get_submodule(parent_name) if parent_name else loaded.model
    original = getattr(parent, attr)
    # Keep blocks from start_layer on; splice before the first kept block, or (after the
    # last block) replace the output of the last block, which then runs once to no effect.
    keep_from = start_layer if start_layer < L else L - 1
    kept = torch.nn.ModuleList(list(original)[keep_from:])
    hidden_states = hidden_states.to(next(loaded.model.parameters()).dtype)
    if start_layer < L:
        handle = kept[0].register_forward_pre_hook(
            lambda _mod, args, kwargs: ((hidden_states, *args[1:]), kwargs) if args
            else (args, {**kwargs, "hidden_states": hidden_states}), with_kwargs=True)
    else:
        handle = kept[0].register_forward_hook(lambda _mod, _args, out: _replace_first(out, hidden_states))
    dummy = torch.zeros_like(hidden_states)
    setattr(parent, attr, kept)
    try:
        return _output(loaded, inputs_embeds=dummy, attention_mask=attention_mask)
    finally:
        setattr(parent, attr, original)
        handle.remove()


def _output(loaded: LoadedModel, **inputs: Any) -> Any:
    """The whole model's output tensor on ``inputs``: logits with an LM head, else the last hidden state."""
    if loaded.head == "causal":
        inputs["use_cache"] = False
    out = loaded.model(**inputs)
    return out.logits if loaded.head != "none" else out.last_hidden_state


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            if isinstance(v, torch.Tensor):
                return v
    if hasattr(value, "to_tuple"):
        return _first_tensor(value.to_tuple())
    return None


def _input_hidden(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("hidden_states")


def _within_base(loaded: LoadedModel, module: str) -> bool:
    prefix = loaded.base_prefix
    return not prefix or module == prefix or module.startswith(prefix + ".")


def _replace_first(out: Any, value: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return value
    if isinstance(out, tuple):
        return (value, *out[1:])
    raise InvalidInput(f"cannot splice into a block returning {type(out).__name__}")
