"""Small helpers shared by the benchmarks (timing, memory, tables, texts)."""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The fastest of ``repeat`` runs, in seconds (the least disturbed by noise)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved_rounds(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[float]]:
    """Seconds of each of ``repeat`` rounds of every function, the functions taking turns within a
    round (a noisy, shared machine slows all of them alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else str(v)


def doc_texts(n: int) -> list[str]:
    """``n`` English texts generated from Python's own docstrings (no download)."""
    import builtins
    import collections
    import json
    import os
    import pathlib
    import re
    import string
    import textwrap

    sources = [builtins, collections, json, os, pathlib, re, string, textwrap, time, gc]
    chunks: list[str] = []
    for mod in sources:
        for name in sorted(dir(mod)):
            doc = getattr(getattr(mod, name, None), "__doc__", None)
            if isinstance(doc, str):
                for para in doc.split("\n\n"):
                    para = " ".join(para.split())
                    if len(para) >= 20:
                        chunks.append(para[:600])
    chunks = sorted(set(chunks))
    return [chunks[i % len(chunks)] if i < len(chunks) else f"{chunks[i % len(chunks)]} ({i})" for i in range(n)]


def activation_like(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Correlated Gaussian rows with a few large outlier dimensions, as LM activations have."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)).astype(np.float32) / np.sqrt(d)
    scale = np.ones(d, np.float32)
    scale[rng.choice(d, max(1, d // 100), replace=False)] = 20.0
    out = np.empty((n, d), np.float16)
    for s in range(0, n, 65536):
        k = min(65536, n - s)
        out[s:s + k] = (rng.standard_normal((k, d), dtype=np.float32) @ mix) * scale
    return out
