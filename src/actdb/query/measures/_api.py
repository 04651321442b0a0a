"""The array API: ``measure(X, Y, **params)``, :func:`evaluate`, :func:`jackknife_stderr`.
Every value comes from the one implementation in ``_moment_route`` or
``_gram_route``; this module only moves arrays into the right form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from actdb.errors import InvalidInput, MeasureError
from actdb.query.measures._gram_route import DEFAULT_SAMPLE, RowSample, sample_rows
from actdb.query.measures._routing import choose_route
from actdb.query.measures._spec import MeasureSpec, get_measure
from actdb.query.moments import Moments, Precision, as_matrix, shard_moments, to_numpy

DEFAULT_SHARDS = 20


@dataclass(frozen=True)
class MeasureResult:
    """One evaluated measure: ``value``, optional jackknife ``stderr``, the ``route`` used,
    the rows ``n``, the row ``sample`` (Gram route) and the resolved ``params``."""

    measure: str
    value: float
    route: str
    n: int
    params: dict[str, Any]
    stderr: float | None = None
    sample: RowSample | None = field(default=None, compare=False)


def jackknife_stderr(
    measure: str | MeasureSpec,
    shard_moments: Sequence[Moments],
    i: int = 0,
    j: int = 1,
    **params: Any,
) -> float:
    """Delete-one-shard jackknife standard error of a moments-route measure (Efron 1982):
    with ``θ_(g)`` the value on all shards but ``g`` (``total − M_g``, exact, no data re-read),
    ``SE = √((G−1)/G · Σ_g (θ_(g) − θ̄)²)``. Needs ``G ≥ 2`` shards."""
    spec = get_measure(measure) if isinstance(measure, str) else measure
    if spec.from_moments is None:
        raise InvalidInput(f"jackknife needs a moments-route measure; {spec.name!r} is route {spec.route!r}")
    g = len(shard_moments)
    if g < 2:
        raise InvalidInput(f"jackknife needs at least 2 shards, got {g}")
    p = spec.resolve_params(params)
    total = sum(shard_moments[1:], shard_moments[0])
    loo = np.array([spec.from_moments((total - s).pair(i, j), **p) for s in shard_moments])
    return float(np.sqrt((g - 1) / g * np.sum((loo - loo.mean()) ** 2)))


def _rows_pair(X: Any, Y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = to_numpy(X, "X"), to_numpy(Y, "Y")
    if x.shape[0] != y.shape[0]:
        raise InvalidInput(
            f"X and Y must have the same rows (row i of X is row i of Y); got {x.shape[0]} and {y.shape[0]}"
        )
    return x, y


def evaluate(
    measure: str,
    X: Any,
    Y: Any,
    *,
    stderr: bool = False,
    shards: int = DEFAULT_SHARDS,
    route: Literal["auto", "moments", "gram"] | None = None,
    precision: Precision = "float64",
    **params: Any,
) -> MeasureResult:
    """Evaluate ``measure`` on ``X`` ``(n, d1)`` and ``Y`` ``(n, d2)`` with full provenance.

    ``route`` is the measure's own unless given: moments-route CKA measures also accept
    ``"gram"`` (on the row sample given by ``sample``/``seed``) or ``"auto"``
    (:func:`choose_route`). ``stderr=True`` adds a jackknife standard error over ``shards``
    contiguous row shards (moments route only).
    """
    spec = get_measure(measure)
    if spec.route == "model":
        raise InvalidInput(f"measure {spec.name!r} needs the models themselves (route 'model'), not arrays")
    x, y = _rows_pair(X, Y)
    n = x.shape[0]
    if n < 2:
        raise MeasureError(f"{spec.name} needs at least 2 rows, got n={n}")
    sample_size = params.pop("sample", DEFAULT_SAMPLE) if spec.route == "moments" else None
    seed = params.pop("seed", 0) if spec.route == "moments" else None
    p = spec.resolve_params(params)
    chosen = route or spec.route
    if chosen == "auto":
        chosen = choose_route(n, [x.shape[1], y.shape[1]], 1) if spec.route == "moments" else spec.route
    if chosen not in ("moments", "gram"):
        raise InvalidInput(f"route must be 'auto', 'moments' or 'gram', got {route!r}")
    if chosen == "gram" and spec.route == "moments":
        if not spec.has_gram_form:
            raise InvalidInput(f"measure {spec.name!r} has no Gram route; use route='moments'")
        if stderr:
            raise InvalidInput("stderr=True is available on the moments route only")
        rs = sample_rows(n, sample_size, int(seed or 0))
        xs, ys = as_matrix(x[rs.indices], "X"), as_matrix(y[rs.indices], "Y")
        if n < spec.min_rows:
            raise MeasureError(f"{spec.name} needs more rows, got n={n}")
        assert spec.from_rows is not None
        value = spec.from_rows(xs, ys, **p)
        return MeasureResult(spec.name, value, "gram", n, {**p, "sample": sample_size, "seed": seed}, None, rs)
    if chosen == "moments" and spec.route != "moments":
        raise InvalidInput(f"measure {spec.name!r} is computed on the Gram route only")
    if spec.route == "gram":
        if stderr:
            raise InvalidInput(
                f"stderr=True is available on the moments route only; {spec.name!r} is Gram-route"
            )
        size = p.pop("sample")
        seed_g = int(p.pop("seed"))
        rs = sample_rows(n, size, seed_g)
        xs, ys = as_matrix(x[rs.indices], "X"), as_matrix(y[rs.indices], "Y")
        assert spec.from_rows is not None
        value = spec.from_rows(xs, ys, **p)
        return MeasureResult(spec.name, value, "gram", n, {**p, "sample": size, "seed": seed_g}, None, rs)
    assert spec.from_moments is not None
    dims = [x.shape[1], y.shape[1]]
    if stderr:
        parts = shard_moments([x, y], min(shards, n), precision=precision,
                              row_norms=spec.row_norms) if n >= 2 else []
        if len(parts) < 2:
            raise MeasureError(f"stderr needs at least 2 rows per shard; got n={n}")
        total = sum(parts[1:], parts[0])
        value = spec.from_moments(total.pair(0, 1), **p)
        return MeasureResult(spec.name, value, "moments", n, p, jackknife_stderr(spec, parts, **p))
    m = Moments.empty(dims, precision=precision, row_norms=spec.row_norms).update([x, y]).settle()
    return MeasureResult(spec.name, spec.from_moments(m.pair(0, 1), **p), "moments", n, p)


def _call(name: str, X: Any, Y: Any, stderr: bool, **kw: Any) -> float | tuple[float, float]:
    res = evaluate(name, X, Y, stderr=stderr, **kw)
    if stderr:
        assert res.stderr is not None
        return res.value, res.stderr
    return res.value
