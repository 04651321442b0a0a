"""The model adapter: load and run ``transformers`` models, name their sites, splice into them.

This is the one module that knows how a Hugging Face model is laid out. Ingest uses it
to capture activations; the query layer uses it for functional measures (model
stitching: an affine map into model B's residual stream, then B's remaining blocks).

Sites
    ``hidden.0`` is the input of the first block (the embeddings, after any embedding
    norm/dropout), ``hidden.j`` the output of block ``j`` (1-based), so ``hidden.L`` is
    the residual stream after the last block, *before* any final norm. (Hugging Face's
    ``hidden_states[-1]`` applies the final norm for decoders; to store that, name the
    norm module as a site, e.g. ``gpt_neox.final_layer_norm``.) Any other site is a
    module path of the model as loaded (``gpt_neox.layers.3.mlp.act``,
    ``encoder.layer.3.attention.output``), captured with a forward hook: its output, or
    the first tensor of a tuple output.

Loading
    Offline by default (``HF_HUB_OFFLINE=1`` unless the environment says otherwise,
    ``local_files_only=True``); safetensors preferred; pickled ``.bin`` weights only
    through ``torch.load(weights_only=True)``. Importing this module imports neither
    torch nor transformers: :func:`load_model` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from actdb.errors import InvalidInput, NotFound, close_matches

if TYPE_CHECKING:
    import torch

Head = Literal["auto", "causal", "masked", "none"]
_HIDDEN = re.compile(r"^hidden\.(\*|-?\d+)$")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")

# model_type -> (blocks path, final norm path) relative to the base model; others are
# found generically (the ModuleList holding num_hidden_layers blocks).
_LAYOUT: dict[str, tuple[str, str | None]] = {
    "gpt_neox": ("layers", "final_layer_norm"),
    "gpt2": ("h", "ln_f"),
    "gptj": ("h", "ln_f"),
    "gpt_neo": ("h", "ln_f"),
    "llama": ("layers", "norm"),
    "mistral": ("layers", "norm"),
    "qwen2": ("layers", "norm"),
    "gemma": ("layers", "norm"),
    "bert": ("encoder.layer", None),
    "roberta": ("encoder.layer", None),
    "electra": ("encoder.layer", None),
    "distilbert": ("transformer.layer", None),
}


@dataclass(frozen=True)
class Site:
    """A resolved site: ``hidden`` (residual stream at ``layer``) or a ``module`` path."""

    name: str
    kind: Literal["hidden", "module"]
    layer: int | None = None
    module: str | None = None


@dataclass
class LoadedModel:
    """A loaded model with what actdb needs to know about its layout.

    ``model`` is the module as loaded (with its LM head when it has one), in eval mode;
    ``blocks`` names its ModuleList of blocks, ``final_norm`` the norm after the last
    block (None for post-norm encoders such as BERT).
    """

    model: Any
    tokenizer: Any
    config: Any
    source: str
    revision: str | None
    head: Literal["causal", "masked", "none"]
    blocks: str
    final_norm: str | None
    n_layers: int
    hidden_size: int
    native_dtype: str
    _names: list[str] = field(default_factory=list, repr=False)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def family(self) -> str:
        return str(getattr(self.config, "model_type", "unknown"))

    @property
    def architecture(self) -> str:
        archs = getattr(self.config, "architectures", None) or [type(self.model).__name__]
        return str(archs[0])

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def module_names(self) -> list[str]:
        """Every named module path (the root excluded)."""
        if not self._names:
            self._names = [n for n, _ in self.model.named_modules() if n]
        return self._names

    def block(self, index: int) -> Any:
        """Block ``index`` (0-based)."""
        return self.model.get_submodule(self.blocks)[index]


# ------------------------------------------------------------------------ loading
def is_local(spec: str) -> bool:
    """A path on disk (or meant as one: ``./x``, ``/x``, ``~/x``, ``a/b/c``) rather than a hub id ``org/name``."""
    return Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1 \
        or "\\" in spec


def check_model_folder(path: str | os.PathLike[str]) -> Path:
    """A local model folder that exists and holds a config and weights, else a clear error."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise NotFound(f"model folder {str(folder)!r} does not exist; give a local folder with config.json "
                       "and weights (model.safetensors), or a hub id that is in the local cache")
    if not folder.is_dir():
        raise InvalidInput(f"model {str(folder)!r} is a file; give the folder that holds config.json and the weights")
    if not (folder / "config.json").is_file():
        subs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        hint = f" (its subfolders: {', '.join(subs[:8])}; for a checkpoint sweep pass it as checkpoints=)" if subs else ""
        raise InvalidInput(f"model folder {str(folder)!r} has no config.json{hint}")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES) and not list(folder.glob("*.safetensors")):
        raise InvalidInput(f"model folder {str(folder)!r} has no weights ({' / '.join(_WEIGHT_FILES[::2])})")
    return folder


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading progress bar and info logs for one load."""
    from transformers.utils import logging as tlog

    was_bar, level = tlog.is_progress_bar_enabled(), tlog.get_verbosity()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        if was_bar:
            tlog.enable_progress_bar()


def head_of_architecture(architecture: str | None) -> Literal["causal", "masked", "none"]:
    """The head a model of this architecture class name loads with: ``causal``
    (``*ForCausalLM``/``*LMHeadModel``), ``masked`` (``*ForMaskedLM``/``*ForPreTraining``)
    or ``none`` (a bare model such as ``BertModel``)."""
    arch = architecture or ""
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal"
    if arch.endswith(("ForMaskedLM", "ForPreTraining")):
        return "masked"
    return "none"


def _head_of(config: Any, head: Head) -> Literal["causal", "masked", "none"]:
    if head != "auto":
        if head not in ("causal", "masked", "none"):
            raise InvalidInput(f"head {head!r} is not one of auto, causal, masked, none")
        return head
    for arch in getattr(config, "architectures", None) or []:
        found = head_of_architecture(arch)
        if found != "none":
            return found
    return "none"


def load_model(spec: str | os.PathLike[str], revision: str | None = None, device: str = "cpu",
               dtype: str | None = None, *, head: Head = "auto", tokenizer: Any = None,
               allow_download: bool = False) -> LoadedModel:
    """Load a model (and its tokenizer) from a local folder or a hub id at ``revision``.

    ``head="auto"`` loads the class its config names: ``*ForCausalLM``/``*LMHeadModel``
    with the LM head, ``*ForMaskedLM`` with the MLM head, anything else as the bare
    model (``AutoModel``); module site names are paths in that model. ``dtype``: the
    compute dtype (default: the checkpoint's own). ``tokenizer``: a tokenizer object or
    folder to use instead of the model's. Nothing is downloaded unless
    ``allow_download=True`` (and the environment allows it).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from actdb.training import register_activations

    register_activations()  # configs with hidden_act="solu" (actdb's SoLU models) load too
    text = os.fspath(spec)
    local = is_local(text)
    if local:
        text = str(check_model_folder(text).resolve())
        if revision is not None:
            raise InvalidInput(f"revision {revision!r} was given for the local folder {text!r}; revisions "
                               "apply to hub ids, a local checkpoint is its own folder")
    torch_device = parse_device(device)
    import torch
    import transformers as tf

    kwargs: dict[str, Any] = {"revision": revision, "local_files_only": not allow_download}
    with _quiet_transformers():
        try:
            config = tf.AutoConfig.from_pretrained(text, **kwargs)
        except OSError as exc:
            raise NotFound(f"model {text!r} (revision {revision or 'main'}) is not a local folder and not in the "
                           f"local Hugging Face cache; actdb does not download. ({str(exc).splitlines()[0]})") from None
        kind = _head_of(config, head)
        auto = {"causal": tf.AutoModelForCausalLM, "masked": tf.AutoModelForMaskedLM, "none": tf.AutoModel}[kind]
        try:
            model = auto.from_pretrained(text, config=config, dtype="auto", use_safetensors=None,
                                         weights_only=True, **kwargs)
        except pickle.UnpicklingError as exc:
            raise InvalidInput(f"cannot load model weights from {text!r}: its pickled weights hold more than tensors "
                               f"and actdb only unpickles with weights_only=True ({_unsupported(exc)}); convert "
                               "trusted weights to safetensors") from None
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot load model weights from {text!r}: {str(exc).splitlines()[0]}") from None
        tok = _load_tokenizer(tokenizer if tokenizer is not None else text, kwargs)
    native = str(next(model.parameters()).dtype).removeprefix("torch.")
    if dtype is not None:
        model = model.to(getattr(torch, str(dtype).removeprefix("torch."), None) or _bad_dtype(dtype))
    model = model.to(torch_device).eval()
    blocks, final_norm, n_layers = _layout(model, config)
    text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    return LoadedModel(model=model, tokenizer=tok, config=config, source=text, revision=revision, head=kind,
                       blocks=blocks, final_norm=final_norm, n_layers=n_layers,
                       hidden_size=int(getattr(text_cfg, "hidden_size", 0) or getattr(text_cfg, "n_embd", 0)),
                       native_dtype=native)


def _unsupported(exc: Exception) -> str:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    return f"found {found.group(1)}" if found else "unsupported content"


def _bad_dtype(dtype: object) -> Any:
    raise InvalidInput(f"compute dtype {dtype!r} is not a torch dtype; use float32, bfloat16 or float16")


def _load_tokenizer(spec: Any, kwargs: dict[str, Any]) -> Any:
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    import transformers as tf

    try:
        return tf.AutoTokenizer.from_pretrained(os.fspath(spec), **kwargs)
    except (OSError, ValueError) as exc:
        return _missing_tokenizer(spec, exc)


def _missing_tokenizer(spec: Any, exc: Exception) -> Any:
    raise InvalidInput(f"no tokenizer could be loaded from {os.fspath(spec)!r} ({str(exc).splitlines()[0]}); "
                       "pass tokenizer= (a folder or tokenizer object)") from None


def parse_device(device: str) -> Any:
    """A torch device string that is available here, else a clear error."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInput(f"device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r} is not available here (torch.cuda.is_available() is False); "
                           "use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInput(f"device {device!r} is not available here; use --device cpu")
    return dev


def _layout(model: Any, config: Any) -> tuple[str, str | None, int]:
    import torch

    base = model.base_model
    full = {id(m): n for n, m in model.named_modules()}
    known = _LAYOUT.get(getattr(config, "model_type", ""))
    blocks = final = None
    if known is not None:
        with contextlib.suppress(AttributeError):
            blocks = base.get_submodule(known[0])
        if known[1] is not None:
            with contextlib.suppress(AttributeError):
                final = base.get_submodule(known[1])
    if blocks is None:
        text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
        n = getattr(text_cfg, "num_hidden_layers", None) or getattr(text_cfg, "n_layer", None)
        lists = [(name.count("."), name, m) for name, m in base.named_modules()
                 if isinstance(m, torch.nn.ModuleList) and (n is None or len(m) == n) and len(m)]
        if not lists:
            raise InvalidInput(f"cannot find the blocks of a {type(model).__name__}: no ModuleList of "
                               f"{n} layers; name module sites explicitly instead of hidden.N")
        blocks = min(lists, key=lambda t: (t[0], t[1]))[2]
    return full[id(blocks)], None if final is None else full[id(final)], len(blocks)


# --------------------------------------------------------------------- hashing
def weights_hash(model: Any) -> str:
    """Content hash of a state dict: sha256 over (name, dtype, shape, bytes) in name order.

    Independent of file format and sharding: two checkpoints with equal tensors hash equal.
    """
    import torch

    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|".encode())
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def tokenizer_hash(tokenizer: Any) -> str:
    """Content hash of a fast tokenizer's definition (vocab, merges, normalizer, specials)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InvalidInput(f"tokenizer {type(tokenizer).__name__} is not a fast (Rust) tokenizer; actdb needs "
                           "one for character offsets: load it with use_fast=True or convert it")
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return "sha256:" + hashlib.sha256(copy.to_str().encode()).hexdigest()


# ----------------------------------------------------------------------- sites
def site_glob(pattern: str) -> re.Pattern[str]:
    """A module-path glob as a regex: ``*`` matches within one dotted part, ``**`` across
    parts (any number of them), ``?`` one character of a part, ``[abc]`` a character class.
    ``encoder.layer.*.output.dense`` matches ``encoder.layer.3.output.dense`` but not
    ``encoder.layer.3.attention.output.dense``; ``**.output.dense`` matches both."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^.]*")
        elif c == "?":
            out.append("[^.]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                out.append("[" + ("^" + re.escape(body[1:]) if body.startswith("!") else re.escape(body)) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def match_modules(pattern: str, names: Sequence[str], prefix: str = "") -> list[str]:
    """Module names matching a site glob, in model order; a glob may omit the base-model
    prefix (``layers.3.mlp`` for ``gpt_neox.layers.3.mlp``)."""
    rx = site_glob(pattern)
    found = [n for n in names if rx.match(n)]
    if not found and prefix:
        rx = site_glob(f"{prefix}.{pattern}")
        found = [n for n in names if rx.match(n)]
    return found


def resolve_sites(loaded: LoadedModel, patterns: str | Iterable[str]) -> list[Site]:
    """Sites matching ``patterns`` in order, deduplicated.

    ``hidden.*`` -> ``hidden.0`` .. ``hidden.L``; ``hidden.N``; ``hidden.-1`` (= ``hidden.L``);
    anything else is a module path or glob over the model's module names (:func:`site_glob`:
    ``*`` within one dotted part, ``**`` across parts); a glob may omit the base-model
    prefix (``layers.3.mlp`` for ``gpt_neox.layers.3.mlp``). ``actdb sites MODEL`` lists them.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    out: dict[str, Site] = {}
    names = loaded.module_names()
    prefix = _base_prefix(loaded)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.strip():
            raise InvalidInput(f"site pattern {pattern!r} is empty; use hidden.*, hidden.N or a module glob")
        pattern = pattern.strip()
        m = _HIDDEN.match(pattern)
        if m:
            for layer in _hidden_layers(m.group(1), loaded.n_layers, pattern):
                out.setdefault(f"hidden.{layer}", Site(f"hidden.{layer}", "hidden", layer=layer))
            continue
        if pattern.startswith("hidden."):
            raise InvalidInput(f"site {pattern!r} is not valid: use hidden.* or hidden.N with N in "
                               f"-{loaded.n_layers + 1}..{loaded.n_layers}")
        matches = match_modules(pattern, names, prefix)
        if not matches:
            raise NotFound(f"site {pattern!r} matches no module of {loaded.architecture}; "
                           f"{_near(pattern, names, prefix)}. Sites are hidden.* / hidden.N or module paths "
                           "('*' matches within one dotted part, '**' across parts); list them with "
                           f"`actdb sites {loaded.source}`")
        for n in matches:
            out.setdefault(n, Site(n, "module", module=n))
    return list(out.values())


SAMPLE_TEXT = "The quick brown fox jumps over the lazy dog."


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

        def hook(mod: Any, args: Any, out: Any, n: str = name) -> None:
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


def _hidden_layers(token: str, n_layers: int, pattern: str) -> list[int]:
    if token == "*":
        return list(range(n_layers + 1))
    k = int(token)
    if not -(n_layers + 1) <= k <= n_layers:
        raise InvalidInput(f"site {pattern!r} is out of range: the model has {n_layers} blocks, so hidden.0 "
                           f"(embeddings) .. hidden.{n_layers}, or hidden.-1 for the last")
    return [k % (n_layers + 1)]


def _base_prefix(loaded: LoadedModel) -> str:
    model = loaded.model
    return str(model.base_model_prefix) if model.base_model is not model else ""


# names the same part goes by in different architectures (suggestions only)
_SYNONYMS = (("mlp", "intermediate", "ffn", "feed_forward", "fc"), ("act", "activation", "act_fn", "gelu"),
             ("attn", "attention", "self_attn"), ("ln", "norm", "layernorm"), ("out", "output", "o_proj", "dense"))


def _synonyms(part: str) -> set[str]:
    low = part.lower().strip("*?")
    words = {low}
    for group in _SYNONYMS:
        if any(w == low or (len(w) > 2 and w in low) for w in group):
            words |= set(group)
    return words


def _near(pattern: str, names: Sequence[str], prefix: str = "") -> str:
    """What to suggest for a glob that matches nothing: the ``**`` form when a part-crossing
    ``*`` was meant, else the module paths closest to it (same depth and shape first)."""
    import difflib

    if "*" in pattern and "**" not in pattern:
        wide = pattern.replace("*", "**")
        found = match_modules(wide, names, prefix)
        if found:
            return (f"'*' matches within one dotted part; {wide!r} (across parts) matches {len(found)} module(s): "
                    + ", ".join(repr(n) for n in found[:4]) + (" ..." if len(found) > 4 else ""))
    literal = [p for p in pattern.split(".") if p.strip("*?[]!")]
    generics = list(dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in names))  # one per block shape

    def score(generic: str) -> float:
        tail = ".".join(generic.split(".")[-len(literal):]) if literal else generic
        text = ".".join(literal)
        hits = sum(any(word in generic.lower() for word in _synonyms(part)) for part in literal)
        return hits / max(1, len(literal)) + 0.5 * max(difflib.SequenceMatcher(None, text, tail).ratio(),
                                                       difflib.SequenceMatcher(None, pattern, generic).ratio())

    seen = sorted(generics, key=score, reverse=True)[:8]
    return "closest module paths: " + ", ".join(repr(g) for g in seen) + f" ({len(names)} modules in all)"


# -------------------------------------------------------------------- running
class _Done(Exception):
    """Raised from a hook once every requested site is captured (skips the rest)."""


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
                lambda mod, args, kwargs, n=s.name: keep(n, _input_hidden(args, kwargs)), with_kwargs=True))
        elif s.kind == "hidden":
            handles.append(loaded.block(s.layer - 1).register_forward_hook(  # type: ignore[operator]
                lambda mod, args, out, n=s.name: keep(n, out)))
        else:
            handles.append(loaded.model.get_submodule(s.module).register_forward_hook(
                lambda mod, args, out, n=s.name: keep(n, out)))
    inside = all(s.kind == "hidden" or _within(loaded, s.module) for s in sites)  # type: ignore[arg-type]
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


def _within(loaded: LoadedModel, module: str) -> bool:
    prefix = _base_prefix(loaded)
    return not prefix or module == prefix or module.startswith(prefix + ".")


def forward(loaded: LoadedModel, input_ids: Any, attention_mask: Any) -> Any:
    """The model's output tensor: logits when it has an LM head, else the last hidden state."""
    kwargs = {"use_cache": False} if loaded.head == "causal" else {}
    out = loaded.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    return out.logits if loaded.head != "none" else out.last_hidden_state


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
        raise InvalidInput(f"hidden_states must be (batch, seq, {loaded.hidden_size}); got {tuple(hidden_states.shape)}")
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
            lambda mod, args, kwargs: ((hidden_states, *args[1:]), kwargs) if args
            else (args, {**kwargs, "hidden_states": hidden_states}), with_kwargs=True)
    else:
        handle = kept[0].register_forward_hook(lambda mod, args, out: _replace_first(out, hidden_states))
    dummy = torch.zeros_like(hidden_states)
    setattr(parent, attr, kept)
    try:
        kwargs = {"use_cache": False} if loaded.head == "causal" else {}
        out = loaded.model(inputs_embeds=dummy, attention_mask=attention_mask, **kwargs)
    finally:
        setattr(parent, attr, original)
        handle.remove()
    return out.logits if loaded.head != "none" else out.last_hidden_state


def _replace_first(out: Any, value: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return value
    if isinstance(out, tuple):
        return (value, *out[1:])
    raise InvalidInput(f"cannot splice into a block returning {type(out).__name__}")


# ---------------------------------------------------------------------- losses
def next_token_loss(logits: Any, input_ids: Any, attention_mask: Any = None, *, reduction: str = "mean") -> Any:
    """Causal LM cross-entropy (nats/token) of predicting token t+1 from position t,
    over positions where both are real tokens. ``reduction``: mean | sum | none (per position, padded)."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1].float()
    target = input_ids[:, 1:].clone()
    if attention_mask is not None:
        valid = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
        target[~valid] = -100
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), target.reshape(-1),
                           ignore_index=-100, reduction=reduction)


def mask_tokens(input_ids: Any, attention_mask: Any, tokenizer: Any, *, rate: float = 0.15,
                seed: int = 0, special_mask: Any = None) -> tuple[Any, Any]:
    """Deterministic BERT-style masking: ``(masked_input_ids, labels)``; labels are -100
    except at the masked positions. Special tokens and padding are never masked."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(input_ids.shape, generator=gen).to(input_ids.device)
    eligible = attention_mask.bool()
    if special_mask is not None:
        eligible &= ~special_mask.bool()
    elif tokenizer is not None and getattr(tokenizer, "all_special_ids", None):
        eligible &= ~torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids, device=input_ids.device))
    chosen = eligible & (probs < rate)
    if tokenizer is None or tokenizer.mask_token_id is None:
        raise InvalidInput("masked-LM loss needs a tokenizer with a [MASK] token")
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return torch.where(chosen, torch.full_like(input_ids, tokenizer.mask_token_id), input_ids), labels


def masked_lm_loss(logits: Any, labels: Any, *, reduction: str = "mean") -> Any:
    """Masked-LM cross-entropy (nats/token) over positions whose label is not -100."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=-100, reduction=reduction)


def output_agreement(logits_a: Any, logits_b: Any, attention_mask: Any = None) -> float:
    """Fraction of real-token positions where two models' top-1 predictions agree."""
    same = logits_a.argmax(-1) == logits_b.argmax(-1)
    if attention_mask is not None:
        mask = attention_mask.bool()
        return float(same[mask].float().mean()) if mask.any() else float("nan")
    return float(same.float().mean())


__all__ = [
    "LoadedModel", "Site", "capture", "check_model_folder", "forward", "list_sites", "load_model", "mask_tokens",
    "masked_lm_loss", "next_token_loss", "output_agreement", "parse_device", "resolve_sites", "run_tail", "site_glob",
    "tokenizer_hash", "weights_hash",
]
