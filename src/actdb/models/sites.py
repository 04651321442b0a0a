"""Site names: what ``hidden.N`` and module globs mean, resolving them against a loaded
model, and what to suggest when a glob matches nothing.

``hidden.0`` is the input of the first block (the embeddings, after any embedding
norm/dropout), ``hidden.j`` the output of block ``j`` (1-based), so ``hidden.L`` is the
residual stream after the last block, *before* any final norm. Any other site is a module
path of the model as loaded (``gpt_neox.layers.3.mlp.act``), or a glob over those paths
(:func:`site_glob`). Nothing here runs the model.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from actdb.errors import InvalidInput, NotFound
from actdb.models.load import LoadedModel

_HIDDEN = re.compile(r"^hidden\.(\*|-?\d+)$")

# names the same part goes by in different architectures (suggestions only)
_SYNONYMS = (("mlp", "intermediate", "ffn", "feed_forward", "fc"), ("act", "activation", "act_fn", "gelu"),
             ("attn", "attention", "self_attn"), ("ln", "norm", "layernorm"), ("out", "output", "o_proj", "dense"))


@dataclass(frozen=True)
class Site:
    """A resolved site: ``hidden`` (residual stream at ``layer``) or a ``module`` path."""

    name: str
    kind: Literal["hidden", "module"]
    layer: int | None = None
    module: str | None = None


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
    prefix = loaded.base_prefix
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


def _hidden_layers(token: str, n_layers: int, pattern: str) -> list[int]:
    if token == "*":
        return list(range(n_layers + 1))
    k = int(token)
    if not -(n_layers + 1) <= k <= n_layers:
        raise InvalidInput(f"site {pattern!r} is out of range: the model has {n_layers} blocks, so hidden.0 "
                           f"(embeddings) .. hidden.{n_layers}, or hidden.-1 for the last")
    return [k % (n_layers + 1)]


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
