"""Loading a ``transformers`` model from a local folder or the local hub cache into a
:class:`LoadedModel` that knows its layout (blocks, final norm, head).

Offline by default (``HF_HUB_OFFLINE=1`` unless the environment says otherwise,
``local_files_only=True``); safetensors preferred; pickled ``.bin`` weights only through
``torch.load(weights_only=True)``. Importing this module imports neither torch nor
transformers: :func:`load_model` does.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from actdb.errors import InvalidInput, NotFound
from actdb.models.solu import register_solu

Head = Literal["auto", "causal", "masked", "none"]
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

    @property
    def base_prefix(self) -> str:
        """The base model's module path inside ``model`` (``gpt_neox``), or "" when the
        model is the base model itself (e.g. ``BertModel``)."""
        return str(self.model.base_model_prefix) if self.model.base_model is not self.model else ""

    def module_names(self) -> list[str]:
        """Every named module path (the root excluded)."""
        if not self._names:
            self._names = [n for n, _ in self.model.named_modules() if n]
        return self._names

    def block(self, index: int) -> Any:
        """Block ``index`` (0-based)."""
        return self.model.get_submodule(self.blocks)[index]


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
        hint = (f" (its subfolders: {', '.join(subs[:8])}; for a checkpoint sweep pass it as checkpoints=)"
                if subs else "")
        raise InvalidInput(f"model folder {str(folder)!r} has no config.json{hint}")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES) and not list(folder.glob("*.safetensors")):
        raise InvalidInput(f"model folder {str(folder)!r} has no weights ({' / '.join(_WEIGHT_FILES[::2])})")
    return folder


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
    register_solu()  # configs with hidden_act="solu" (actdb's demo models) load too
    text = os.fspath(spec)
    if is_local(text):
        text = str(check_model_folder(text).resolve())
        if revision is not None:
            raise InvalidInput(f"revision {revision!r} was given for the local folder {text!r}; revisions "
                               "apply to hub ids, a local checkpoint is its own folder")
    torch_device = parse_device(device)
    kwargs: dict[str, Any] = {"revision": revision, "local_files_only": not allow_download}
    with _quiet_transformers():
        config = _load_config(text, kwargs)
        kind = _head_of(config, head)
        model = _load_weights(text, config, kind, kwargs)
        tok = _load_tokenizer(tokenizer if tokenizer is not None else text, kwargs)
    if dtype is not None:
        model = model.to(_torch_dtype(dtype))
    model = model.to(torch_device).eval()
    blocks, final_norm, n_layers = _layout(model, config)
    text_cfg = _text_config(config)
    return LoadedModel(model=model, tokenizer=tok, config=config, source=text, revision=revision, head=kind,
                       blocks=blocks, final_norm=final_norm, n_layers=n_layers,
                       hidden_size=int(getattr(text_cfg, "hidden_size", 0) or getattr(text_cfg, "n_embd", 0)))


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


def _load_config(text: str, kwargs: dict[str, Any]) -> Any:
    import transformers as tf

    try:
        return tf.AutoConfig.from_pretrained(text, **kwargs)
    except OSError as exc:
        raise NotFound(f"model {text!r} (revision {kwargs['revision'] or 'main'}) is not a local folder and not in "
                       f"the local Hugging Face cache; actdb does not download. ({str(exc).splitlines()[0]})") from None


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


def _load_weights(text: str, config: Any, kind: Literal["causal", "masked", "none"], kwargs: dict[str, Any]) -> Any:
    import transformers as tf

    auto = {"causal": tf.AutoModelForCausalLM, "masked": tf.AutoModelForMaskedLM, "none": tf.AutoModel}[kind]
    try:
        return auto.from_pretrained(text, config=config, dtype="auto", use_safetensors=None, weights_only=True,
                                    **kwargs)
    except pickle.UnpicklingError as exc:
        raise InvalidInput(f"cannot load model weights from {text!r}: its pickled weights hold more than tensors "
                           f"and actdb only unpickles with weights_only=True ({_unsupported(exc)}); convert "
                           "trusted weights to safetensors") from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot load model weights from {text!r}: {str(exc).splitlines()[0]}") from None


def _unsupported(exc: Exception) -> str:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    return f"found {found.group(1)}" if found else "unsupported content"


def _load_tokenizer(spec: Any, kwargs: dict[str, Any]) -> Any:
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    import transformers as tf

    try:
        return tf.AutoTokenizer.from_pretrained(os.fspath(spec), **kwargs)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"no tokenizer could be loaded from {os.fspath(spec)!r} ({str(exc).splitlines()[0]}); "
                           "pass tokenizer= (a folder or tokenizer object)") from None


def _torch_dtype(dtype: object) -> Any:
    import torch

    found = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(found, torch.dtype):
        raise InvalidInput(f"compute dtype {dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
    return found


def _text_config(config: Any) -> Any:
    """The language model's part of a config (the config itself unless it is multimodal)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _layout(model: Any, config: Any) -> tuple[str, str | None, int]:
    """``(blocks path, final norm path or None, number of blocks)`` of a loaded model."""
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
        text_cfg = _text_config(config)
        n = getattr(text_cfg, "num_hidden_layers", None) or getattr(text_cfg, "n_layer", None)
        lists = [(name.count("."), name, m) for name, m in base.named_modules()
                 if isinstance(m, torch.nn.ModuleList) and (n is None or len(m) == n) and len(m)]
        if not lists:
            raise InvalidInput(f"cannot find the blocks of a {type(model).__name__}: no ModuleList of "
                               f"{n} layers; name module sites explicitly instead of hidden.N")
        blocks = min(lists, key=lambda t: (t[0], t[1]))[2]
    return full[id(blocks)], None if final is None else full[id(final)], len(blocks)
