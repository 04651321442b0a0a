"""Concurrency suite helpers: worker processes (``_workers.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
from reliability_kit import CONCURRENCY_SECONDS, tiny_bert

WORKERS = Path(__file__).with_name("_workers.py")
__all__ = ["CONCURRENCY_SECONDS", "spawn", "tiny_bert"]


def spawn(*args: object) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, str(WORKERS), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
