"""Selection filters: one parser for Python values, CLI strings and HTTP query parameters.

A filter value is a plain value (``"pythia-70m"``, ``3``), a list of values, a glob
(``"step*"``, ``"hidden.*"``), or, for numbers, a ``slice``/``range`` (``layer=slice(2, 6)``,
``step=range(0, 10_000, 1_000)``). The string form used by the CLI and HTTP API is
``key=value,key=value``; a value may be a glob, a ``|``-separated list (``layer=1|3|5``) or
a half-open range ``a:b`` for numeric keys (``layer=2:6``, ``step=:1000``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from actdb.errors import InvalidInput

TEXT_KEYS = ("model", "checkpoint", "site", "dataset", "pooling", "tokenizer", "family", "architecture", "store")
NUMBER_KEYS = ("layer", "step", "width", "depth", "rep_id")
KEYS = TEXT_KEYS + NUMBER_KEYS
_GLOB = re.compile(r"[*?\[]")
_TOKEN = re.compile(r"^[A-Za-z0-9_.\-*?\[\]/|:]+$")


@dataclass(frozen=True)
class Match:
    """One parsed filter: a key and a tuple of alternatives (values, globs or ranges)."""

    key: str
    alternatives: tuple[Any, ...]

    def __call__(self, value: Any) -> bool:
        return any(_matches(alt, value) for alt in self.alternatives)

    def describe(self) -> str:
        return f"{self.key}=" + "|".join(_show(a) for a in self.alternatives)


def _show(alt: Any) -> str:
    if isinstance(alt, range):
        return f"{alt.start}:{alt.stop}" + (f":{alt.step}" if alt.step != 1 else "")
    if isinstance(alt, slice):
        return f"{'' if alt.start is None else alt.start}:{'' if alt.stop is None else alt.stop}"
    return str(alt)


def _matches(alt: Any, value: Any) -> bool:
    if isinstance(alt, range):
        return isinstance(value, int) and value in alt
    if isinstance(alt, slice):
        if not isinstance(value, (int, float)):
            return False
        return (alt.start is None or value >= alt.start) and (alt.stop is None or value < alt.stop)
    if isinstance(alt, str) and _GLOB.search(alt):
        return value is not None and fnmatch.fnmatchcase(str(value), alt)
    if value is None:
        return False
    if isinstance(alt, str) and not isinstance(value, str):
        return alt == str(value)
    return bool(alt == value)


def parse_filter(key: str, value: Any) -> Match:
    """Check a Python filter value and turn it into a :class:`Match`."""
    if key not in KEYS:
        raise InvalidInput(f"unknown filter {key!r}; filters are {', '.join(KEYS)}")
    values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    if not values:
        raise InvalidInput(f"filter {key}= has an empty list; give at least one value")
    out: list[Any] = []
    for v in values:
        if isinstance(v, (range, slice)):
            if key not in NUMBER_KEYS:
                raise InvalidInput(f"filter {key}= takes names or globs, not a range")
            if isinstance(v, slice) and v.step not in (None, 1):
                raise InvalidInput(f"filter {key}={v!r}: use range(start, stop, step) for stepped ranges")
            out.append(v)
        elif isinstance(v, bool) or v is None:
            raise InvalidInput(f"filter {key}={v!r} is not a value actdb can match")
        elif key in NUMBER_KEYS:
            if isinstance(v, int) or (isinstance(v, str) and _GLOB.search(v)):
                out.append(v)
            else:
                try:
                    out.append(int(v))
                except (TypeError, ValueError):
                    raise InvalidInput(f"filter {key}={v!r} must be a whole number, list, or range") from None
        else:
            if not isinstance(v, str) or not v or len(v) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in v):
                raise InvalidInput(f"filter {key}={v!r:.60} must be a printable name or glob")
            out.append(v)
    return Match(key, tuple(out))


def parse_filters(filters: dict[str, Any]) -> tuple[Match, ...]:
    return tuple(parse_filter(k, v) for k, v in sorted(filters.items()) if v is not None)


def _parse_token(key: str, text: str) -> Any:
    if key in NUMBER_KEYS and ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise InvalidInput(f"range {key}={text!r} must look like a:b or a:b:step")
        try:
            nums = [int(p) if p else None for p in parts]
        except ValueError:
            raise InvalidInput(f"range {key}={text!r} must use whole numbers") from None
        if len(nums) == 3:
            if nums[0] is None or nums[1] is None or nums[2] is None:
                raise InvalidInput(f"stepped range {key}={text!r} needs start, stop and step")
            if nums[2] == 0:
                raise InvalidInput(f"stepped range {key}={text!r} has step 0; use a step of 1 or more")
            return range(nums[0], nums[1], nums[2])
        return slice(nums[0], nums[1])
    if key in NUMBER_KEYS and re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def parse_filter_string(text: str) -> dict[str, Any]:
    """``"model=x,checkpoint=step*,layer=2:6"`` -> a filter dict for :meth:`Database.reps`.

    A malformed filter raises :class:`InvalidInput` naming the bad token.
    """
    out: dict[str, Any] = {}
    if text is None or not text.strip():
        return out
    for token in text.split(","):
        token = token.strip()
        if not token:
            continue
        if "=" not in token:
            raise InvalidInput(f"bad filter token {token!r} in {text!r}: expected key=value "
                               f"(keys: {', '.join(KEYS)})")
        key, _, value = token.partition("=")
        key, value = key.strip(), value.strip()
        if key not in KEYS:
            raise InvalidInput(f"bad filter token {token!r}: unknown key {key!r} (keys: {', '.join(KEYS)})")
        if not value or not _TOKEN.match(value):
            raise InvalidInput(f"bad filter token {token!r}: the value may use letters, digits, '_.-/', "
                               "globs '*?[]', '|' for lists and ':' for ranges")
        if key in out:
            raise InvalidInput(f"bad filter token {token!r}: {key} is given twice")
        alts = [_parse_token(key, v) for v in value.split("|")]
        parse_filter(key, alts)  # validate
        out[key] = alts if len(alts) > 1 else alts[0]
    return out
