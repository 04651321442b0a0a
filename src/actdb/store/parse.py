"""Parsers for values that cross a trust boundary into the store.

Each ``parse_x(value) -> T`` accepts what a user, a CLI string, an HTTP body or a
catalog row may hand us and raises :class:`InvalidInput` naming the value and the fix.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from actdb.errors import InvalidInput, NonFinite

MAX_NAME = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SITE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
POOLINGS: tuple[str, ...] = ("token", "mean", "first", "last")
_FLOAT_KINDS = {"float16", "float32", "float64", "bfloat16"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_utf8(value: str, what: str) -> str:
    """``value`` when it encodes as UTF-8; else :class:`InvalidInput` naming ``what`` and the
    first lone surrogate (a half of a UTF-16 pair, e.g. from a JSON ``"\\ud800"`` escape or a
    file name decoded with ``surrogateescape``): no catalog can store one."""
    match = _SURROGATE.search(value)
    if match is not None:
        raise InvalidInput(
            f"{what} is not valid UTF-8 (lone surrogate U+{ord(match.group()):04X} at character "
            f"{match.start()}); fix the source text or drop it")
    return value


def check_text(value: str, what: str) -> str:
    """A stored text (dataset text, label, split): valid UTF-8 (:func:`check_utf8`) and free
    of NUL characters, which PostgreSQL text cannot hold (refused on every catalog, so a
    dataset means the same everywhere)."""
    check_utf8(value, what)
    at = value.find("\x00")
    if at >= 0:
        raise InvalidInput(f"{what} contains a NUL character (at character {at}); remove it: catalogs "
                           "cannot store it")
    return value


def parse_name(value: object, what: str, *, allow_slash: bool = False) -> str:
    """A model/checkpoint/dataset/tokenizer name: printable, trimmed, at most 200 chars."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} name must be a string, got {type(value).__name__} {value!r:.60}")
    shown = repr(value) if len(value) <= 60 else repr(value[:60]) + f"... ({len(value)} chars)"
    check_utf8(value, f"{what} name {shown}")
    if not value.strip():
        raise InvalidInput(f"{what} name must not be empty")
    if _CONTROL.search(value):
        raise InvalidInput(f"{what} name {shown} contains control characters (NUL, newline, ...); use printable text")
    if len(value) > MAX_NAME:
        raise InvalidInput(f"{what} name {shown} is longer than {MAX_NAME} characters")
    if value != value.strip():
        raise InvalidInput(f"{what} name {shown} has leading or trailing spaces")
    parts = value.split("/")
    if "/" in value and not allow_slash:
        raise InvalidInput(f"{what} name {shown} must not contain '/'")
    if (any(p in ("", ".", "..") for p in parts) and len(parts) > 1) or value in (".", ".."):
        raise InvalidInput(f"{what} name {shown} looks like a path ('.', '..' or empty segments); use a plain name")
    return value


def parse_site(value: object) -> str:
    """A site: ``hidden.N`` or a module path such as ``gpt_neox.layers.3.mlp.act``."""
    if not isinstance(value, str) or not _SITE.match(value) or len(value) > MAX_NAME or ".." in value:
        raise InvalidInput(
            f"site {value!r:.80} is not valid: use 'hidden.N' (N = 0 for embeddings, L for the output "
            "of block L) or a dotted module path of letters, digits, '_', '-'"
        )
    return value


def layer_of_site(site: str) -> int | None:
    """The layer index of a site: ``hidden.L`` -> L; a module inside block k -> k + 1."""
    if site.startswith("hidden."):
        tail = site.removeprefix("hidden.")
        return int(tail) if tail.isdigit() else None
    match = re.search(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)", site)
    return int(match.group(1)) + 1 if match else None


def parse_pooling(value: object) -> str:
    if value not in POOLINGS:
        raise InvalidInput(f"pooling {value!r} is not one of {', '.join(POOLINGS)}")
    return str(value)


def as_array(value: Any, *, what: str = "array") -> np.ndarray:
    """The one conversion of an input array to numpy, in its own dtype and not copied when
    possible: a numpy array as is; a torch tensor (recognised by ``detach``/``cpu``, so torch
    is never imported here) detached and moved to the CPU, bfloat16 widened to float32 (numpy
    has no bfloat16); anything else through ``np.asarray``. Used by the store's writers and
    the query layer's measures alike; each then checks the dtypes and shapes it accepts."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        value = tensor.numpy()
    if isinstance(value, np.ndarray):
        return value
    try:
        out: np.ndarray = np.asarray(value)
    except Exception as exc:  # any conversion failure is bad input
        raise InvalidInput(f"{what} of type {type(value).__name__} cannot be read as an array: {exc}") from None
    return out


def as_numpy(array: Any, *, what: str = "array") -> np.ndarray:
    """Activations to store: :func:`as_array`, which must give a floating-point array."""
    out = as_array(array, what=what)
    if out.dtype.name not in _FLOAT_KINDS:
        raise InvalidInput(
            f"{what} has dtype {out.dtype}; activations must be floating point "
            "(float16, bfloat16, float32 or float64): convert with .astype('float32')"
        )
    return out


def check_matrix(array: np.ndarray, *, n_rows: int | None, what: str) -> None:
    if array.ndim != 2:
        raise InvalidInput(f"{what} must be 2-D (n_rows, dim); got shape {array.shape}. "
                           "Flatten batch and sequence dimensions into rows first")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInput(f"{what} is empty (shape {array.shape})")
    if n_rows is not None and array.shape[0] != n_rows:
        raise InvalidInput(f"{what} has {array.shape[0]} rows but the token/example table has {n_rows}")


#: What to do about non-finite activations given to the store.
STORE_FIX = "fix the input or pass allow_nonfinite=True to store it anyway"


def check_finite(array: np.ndarray, *, what: str, fix: str = STORE_FIX, first_row: int = 0) -> None:
    """The one finiteness check: raise :class:`NonFinite` if the 2-D ``array`` holds NaN or
    Inf, saying how many values and where the first is (rows numbered from ``first_row``:
    a block's place in a longer stream), then ``fix``, what the caller should do."""
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)
        r, c = (int(x) for x in bad[0])
        raise NonFinite(
            f"{what} has {len(bad)} NaN/Inf values (first at row {first_row + r}, column {c}: {array[r, c]}); {fix}"
        )
