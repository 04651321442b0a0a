"""Every benchmark runs once at a tiny size, so none can rot (the figures come from the
full runs documented in the README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_tiny(script, tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / script), "--tiny"], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path, env={**__import__("os").environ, "ACTDB_BENCH_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "|" in out.stdout  # printed a results table
