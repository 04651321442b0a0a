"""Parsing request values at the trust boundary (shared by the HTTP API and the CLI).

Selections given as filter dicts or filter strings both go through
:func:`actdb.query.filters.parse_filter_string`, the one parser of the filter syntax.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from actdb.errors import InvalidInput
from actdb.query.filters import parse_filter_string


def parse_selection(value: str | Mapping[str, Any] | None, *, side: str = "a") -> dict[str, Any]:
    """A selection from ``"model=x,layer=2:6"`` or ``{"model": "x", "layer": "2:6"}``
    (a list value means alternatives) -> filters for :meth:`Database.reps`."""
    if value is None:
        return {}
    if isinstance(value, str):
        return parse_filter_string(value)
    if not isinstance(value, Mapping):
        raise InvalidInput(f"selection {side!r} must be a filter string or an object of filters")
    tokens = []
    for key, raw in value.items():
        alts = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if not alts:
            raise InvalidInput(f"filter {side}.{key} is an empty list; give at least one value")
        texts = []
        for alt in alts:
            if isinstance(alt, bool) or alt is None or not isinstance(alt, (str, int)):
                raise InvalidInput(f"filter {side}.{key}={alt!r}: values are names, globs, numbers or ranges")
            text = str(alt)
            if any(c in text for c in ",=|"):
                raise InvalidInput(f"bad filter token {key}={text!r}: a value may not contain ',', '=' or '|' "
                                   "(give alternatives as a list)")
            texts.append(text)
        tokens.append(f"{key}={'|'.join(texts)}")
    return parse_filter_string(",".join(tokens))


def parse_measure_params(measures: Iterable[str], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check measure parameters' types against the measures' defaults (names are checked
    by the plan builder, which lists the valid ones)."""
    from actdb.query.measures import get_measure

    params = dict(params or {})
    specs = [get_measure(m) for m in measures]
    for key, value in params.items():
        defaults = [s.params[key] for s in specs if key in s.params]
        if not defaults:
            continue  # unknown name: Comparison.build explains
        want = defaults[0]
        ok = (isinstance(value, bool) if isinstance(want, bool)
              else isinstance(value, int) and not isinstance(value, bool) if isinstance(want, int)
              else isinstance(value, (int, float)) and not isinstance(value, bool) if isinstance(want, float)
              else isinstance(value, str) if isinstance(want, str) else True)
        if not ok:
            raise InvalidInput(f"parameter {key}={value!r} must be {type(want).__name__} "
                               f"(default {want!r})")
        if isinstance(value, float) and value != value:
            raise InvalidInput(f"parameter {key} is NaN")
    return params


def parse_param_option(items: Iterable[str]) -> dict[str, Any]:
    """CLI ``--param key=value`` items -> a dict (values parsed as JSON, else kept as text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"bad --param {item!r}: expected key=value, e.g. --param k=10")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out
