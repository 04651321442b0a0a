"""``actdb demo``: the motivating study (Brown et al., EMNLP 2023) in miniature, offline.

:func:`run_demo` trains tiny Pythia-architecture models (GeLU and SoLU MLPs, two widths)
with one shared tokenizer on generated text, ingests every checkpoint and the real
all-MiniLM-L6-v2, fine-tunes two classifiers on a task with a planted shortcut, computes
linear-CKA heatmaps, training trajectories, GeLU/SoLU and width comparisons and model
stitching in both directions, and writes ``STORE/report/index.html`` (plots, tables, the
SQL and Python behind each, readings computed from this run's numbers) plus
``STORE/report/summary.json``. Everything is stored: a second run reuses the trained
models, the ingested reps and the cached results, and finishes in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_STORE = "actdb-demo"


@dataclass
class DemoSummary:
    """What a demo run produced: where, how long, and the headline numbers."""

    store: Path
    report: Path
    summary_json: Path
    seconds: float
    quick: bool
    reused: bool  # nothing was trained this run (everything came from the store)
    timings: dict[str, float] = field(default_factory=dict)
    headlines: list[str] = field(default_factory=list)
    queries: list[tuple[str, str]] = field(default_factory=list)  # (what it shows, SQL)

    def text(self) -> str:
        lines = [f"actdb demo ({'quick' if self.quick else 'full'}) finished in {self.seconds:.1f} s"
                 + (" (everything reused from the store)" if self.reused else ""),
                 f"store:  {self.store}", f"report: {self.report}", ""]
        lines += [f"* {h}" for h in self.headlines]
        lines += ["", "Try next:"]
        for what, q in self.queries:
            lines += [f"  # {what}", f"  actdb sql {self.store} \"{q}\"", ""]
        return "\n".join(lines)


def run_demo(store: str | Path = DEFAULT_STORE, quick: bool = False,
             log: Callable[[str], None] | None = None) -> DemoSummary:
    """Run the demo into ``store`` (created if missing) and write its report."""
    import actdb
    from actdb.demo.report import write_report
    from actdb.demo.study import FULL, QUICK, run_study

    started = time.perf_counter()
    say: Callable[[str], None] = log or (lambda _m: None)
    path = Path(store).resolve()
    path.mkdir(parents=True, exist_ok=True)
    db: Any = actdb.open(str(path))
    study = run_study(db, path, QUICK if quick else FULL, say)
    with_report = time.perf_counter()
    report = write_report(db, study)
    study.timings["report"] = round(time.perf_counter() - with_report, 2)
    seconds = time.perf_counter() - started
    summary = DemoSummary(store=path, report=report.index, summary_json=report.summary_json, seconds=seconds,
                          quick=quick, reused=not study.trained, timings=study.timings,
                          headlines=report.headlines, queries=report.queries)
    report.finish(seconds, summary.reused)
    return summary


__all__ = ["DEFAULT_STORE", "DemoSummary", "run_demo"]
