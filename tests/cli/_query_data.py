"""The query tests' data builder (tests/query/query_data.py), loaded once for the CLI tests."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parents[2]


@functools.cache
def query_data() -> ModuleType:
    path = ROOT / "tests" / "query" / "query_data.py"
    spec = importlib.util.spec_from_file_location("actdb_tests_query_data_cli", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
