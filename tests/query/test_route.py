"""One route choice: ``explain()`` reports the route ``compute()`` runs (the registry's
``plan_route``), and the registry owns each measure's parameters, forms and route."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import actdb
from actdb.errors import InvalidInput
from actdb.query.measures import (
    DEFAULT_SAMPLE,
    REGISTRY,
    Imported,
    choose_route,
    get_measure,
    plan_route,
)

CKA = get_measure("linear_cka")


def _store(tmp_path: Path, n: int, width: int, dtype: str) -> actdb.Database:
    """Two random reps of ``n`` rows and ``width`` columns over one dataset."""
    db = actdb.open(str(tmp_path / f"s{n}x{width}"))
    rng = np.random.default_rng(0)
    db.add_dataset("d", [f"text {i}" for i in range(n)])
    for k in range(2):
        x = rng.standard_normal((n, width)).astype(dtype)
        db.write_rep("m", "final", "d", f"hidden.{k}", x, pooling="mean", dtype=dtype)
    return db


def _explained_routes(text: str) -> dict[str, int]:
    found = re.findall(r"routes: ([^;]+);", text)
    assert len(found) == 1, text
    return {k: int(v) for k, v in (item.split("=") for item in found[0].split(", "))}


def _boundary_width(n: int) -> int:
    """The narrowest width at which the cost model prefers Grams for one pair of ``n`` rows."""
    lo, hi = 1, 4 * n
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if choose_route(n, [mid, mid], 1) == "gram" else (mid + 1, hi)
    return lo


def test_route_function_on_the_reported_case() -> None:
    # n = 5,000 rows, two reps of width 4,096: Grams are cheaper by the cost model, but a
    # plan samples DEFAULT_SAMPLE rows, so the Gram route would not be exact: moments
    assert choose_route(5000, [4096, 4096], 1) == "gram"
    assert plan_route(CKA, 5000, [4096, 4096], 1) == "moments"
    assert plan_route(get_measure("debiased_cka"), 5000, [4096, 4096], 1) == "moments"
    # on the boundary: every row in the sample -> the cheaper exact route
    assert plan_route(CKA, DEFAULT_SAMPLE, [4096, 4096], 1) == "gram"
    assert plan_route(CKA, DEFAULT_SAMPLE + 1, [4096, 4096], 1) == "moments"
    assert plan_route(CKA, DEFAULT_SAMPLE, [4096, 4096], 1, stderr=True) == "moments"
    assert plan_route(CKA, 100_000, [768, 768], 1) == "moments"
    # measures without a Gram form keep their own route
    assert plan_route(get_measure("procrustes"), 100, [4096, 4096], 1) == "moments"
    assert plan_route(get_measure("rsa"), 100_000, [8, 8], 1) == "gram"
    assert plan_route(get_measure("stitching"), 100, [8, 8], 1) == "model"


@pytest.mark.slow
@pytest.mark.parametrize("n, route", [(DEFAULT_SAMPLE, "gram"), (DEFAULT_SAMPLE + 1, "moments")])
def test_explain_and_compute_agree_on_the_sample_boundary(tmp_path: Path, n: int, route: str) -> None:
    """The reported disagreement (n = 5,000 > DEFAULT_SAMPLE, widths where Grams are
    cheaper) at its boundary, n = DEFAULT_SAMPLE + 1, and just inside it."""
    width = _boundary_width(n) + 8
    assert choose_route(n, [width, width], 1) == "gram"  # the cost model alone says gram
    db = _store(tmp_path, n, width, "float16")
    plan = db.reps(site="hidden.0").compare(db.reps(site="hidden.1"), measure="linear_cka")
    assert _explained_routes(plan.explain(show=False)) == {route: 1}
    rows = plan.compute().rows
    assert [r["route"] for r in rows] == [route]


def test_explain_and_compute_agree_with_mixed_measures(tmp_path: Path) -> None:
    """Small n, wide reps: linear CKA goes to Grams in both, procrustes stays on moments, rsa
    on Grams; with stderr everything is moments, in both."""
    n = 40
    db = _store(tmp_path, n, 64, "float32")
    measures = ["linear_cka", "procrustes", "rsa"]
    plan = db.reps(site="hidden.0").compare(db.reps(site="hidden.1"), measure=measures)
    explained = _explained_routes(plan.explain(show=False))
    rows = plan.compute().rows
    ran = {r["measure"]: r["route"] for r in rows}
    assert ran == {"linear_cka": "gram", "procrustes": "moments", "rsa": "gram"}
    assert explained == {"gram": 2, "moments": 1}
    plan = db.reps(site="hidden.0").compare(db.reps(site="hidden.1"), measure=["linear_cka", "procrustes"],
                                            stderr=True)
    assert _explained_routes(plan.explain(show=False)) == {"moments": 2}
    assert {r["route"] for r in plan.compute().rows} == {"moments"}


# ------------------------------------------------------------------ the registry owns it
def test_parameter_defaults_come_from_the_signatures() -> None:
    for name, spec in REGISTRY.items():
        if isinstance(spec.func, Imported):
            continue
        sig = inspect.signature(spec.func).parameters
        for key, default in spec.params.items():
            assert sig[key].default == default, (name, key)
        # the route implementations take the same defaults
        for impl in (spec.from_moments, spec.from_rows):
            if impl is None:
                continue
            for key, p in inspect.signature(impl).parameters.items():
                if p.default is not p.empty and key in spec.params:
                    assert p.default == spec.params[key], (name, key, impl)
    assert get_measure("gulp").params == {"lam": 1e-2, "squared": False}
    assert get_measure("linear_cka").params == {}  # stderr, shards, route, sample, seed: call options
    assert list(get_measure("rbf_cka").params) == ["sigma", "median", "debiased", "sample", "seed"]


def test_prepared_forms_equal_the_measure_on_rows() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((30, 6)), rng.standard_normal((30, 5))
    for name, spec in REGISTRY.items():
        form = spec.prepared
        if form is None:
            continue
        assert spec.from_rows is not None
        p = {k: v for k, v in spec.params.items() if k not in ("sample", "seed")}
        if not form.applies(p):
            continue
        value = form.compare(form.prepare(x, p), form.prepare(y, p), p)
        assert value == pytest.approx(spec.from_rows(x, y, **p), rel=1e-12, abs=1e-15), name
    rbf = get_measure("rbf_cka").prepared
    assert rbf is not None and not rbf.applies({"debiased": True})


def test_stitching_is_listed_without_importing_it() -> None:
    code = ("import sys, actdb.query.plan, actdb.query.executor\n"
            "from actdb.query.measures import get_measure\n"
            "spec = get_measure('stitching')\n"
            "assert spec.route == 'model' and not spec.symmetric, spec\n"
            "assert 'actdb.query.stitching' not in sys.modules, 'imported for a side effect'\n"
            "assert spec.params['objective'] == 'auto'\n"
            "assert 'actdb.query.stitching' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    spec = get_measure("stitching")
    assert spec.task_params is not None
    with pytest.raises(InvalidInput, match="needs stored reps"):
        spec.func(np.ones((3, 2)), np.ones((3, 2)))


def test_specs_are_built_by_keyword() -> None:
    from actdb.query.measures import MeasureSpec

    with pytest.raises(TypeError):
        MeasureSpec("x", lambda x, y: 0.0, "similarity", (0, 1), "gram")
    with pytest.raises(InvalidInput, match="needs from_rows"):
        MeasureSpec(name="x", func=lambda x, y: 0.0, kind="similarity", value_range=(0, 1), route="gram",
                    citation="x")
    with pytest.raises(InvalidInput, match="import path"):
        Imported("no_colon")
