"""Progress bars for long library calls: one bar in a terminal or a notebook, none elsewhere.

``progress=None`` (the default of :meth:`~actdb.query.plan.Comparison.compute`) shows a bar
when stderr is a terminal or the code runs in a Jupyter kernel, so scripts piped to files,
tests and CI stay quiet; ``progress=True`` always shows one (on stderr), ``progress=False``
never does (ingest's ``quiet=True`` is the same as ``progress=False``). Bars are tqdm's
(``tqdm.auto``: a widget in a notebook when ipywidgets is installed, text otherwise); tqdm
is imported only when a bar is shown. Both the query and the ingest layer may import this
module (it imports nothing of actdb but :mod:`actdb.errors`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

from actdb.errors import InvalidInput


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython is looked up, never imported)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def wanted(progress: bool | None) -> bool:
    """Whether to show a bar: ``progress`` when given, else (None) only on a terminal or in a notebook."""
    if progress is None:
        stream = sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)()) or in_notebook()
    if not isinstance(progress, bool):
        raise InvalidInput(f"progress must be True, False or None (a terminal or a notebook), not {progress!r}")
    return progress


class Bar:
    """One progress bar of ``total`` units (silent when ``show`` is false): ``advance`` moves
    it, ``note`` sets the text after it; a context manager that closes it."""

    def __init__(self, total: float, *, desc: str, show: bool, unit: str = "it"):
        self._bar: Any = None
        if show:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]  # tqdm ships no annotations

            fmt = "{desc}{postfix} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"  # postfix: ", text"
            self._bar = tqdm(total=total, desc=desc, unit=unit, bar_format=fmt, file=sys.stderr, leave=True,
                             dynamic_ncols=True)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def advance(self, units: float) -> None:
        if self._bar is not None and units:
            self._bar.update(units)

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ComputeProgress:
    """The bar of ``Comparison.compute()``: values (pairs x measures) done of ``total``, the
    pass of its row space, MiB read; time left from the rows read so far.

    A streaming pass of ``k`` values over ``n`` rows moves the bar by ``k * rows / n`` as each
    block is read (:meth:`begin_pass` returns that callback); :meth:`finish` then counts the
    pass's values as done (values of other routes count when they are computed)."""

    def __init__(self, total: int, progress: bool | None):
        self.total, self.done, self.read = total, 0, 0.0
        self.bar = Bar(total, desc="compute", show=wanted(progress) and total > 0, unit="value")
        self._pass = ""
        self._moved = 0.0  # bar units moved by the current pass's rows
        self._note()

    def _note(self) -> None:
        self.bar.note(f"{self.done}/{self.total} values{self._pass}, {self.read / 2**20:,.1f} MiB read")

    def begin_pass(self, index: int, count: int, values: int, rows: int, row_bytes: float) -> Callable[[int], None]:
        """Pass ``index`` (0-based) of ``count`` of one row space: ``values`` values from ``rows``
        rows of ``row_bytes`` stored bytes each. Returns the per-block callback (rows read)."""
        self._pass, self._moved = f", pass {index + 1}/{count}", 0.0
        self._note()
        share = values / max(1, rows)

        def on_rows(n: int) -> None:
            step = min(share * n, values - self._moved)
            self._moved += step
            self.read += n * row_bytes
            self._note()
            self.bar.advance(step)

        return on_rows

    def finish(self, values: int) -> None:
        """``values`` more values are computed (the rest of a pass's share moves the bar)."""
        self.done += values
        self._note()
        self.bar.advance(values - self._moved)
        self._moved = 0.0

    def close(self) -> None:
        self._pass = ""
        self._note()
        self.bar.close()
