"""Which route a measure is computed on: :func:`plan_route` (plans: ``explain()`` and the
executor alike) and its cost model :func:`choose_route`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from actdb.errors import InvalidInput
from actdb.query.measures._gram_route import DEFAULT_SAMPLE
from actdb.query.measures._spec import MeasureSpec, Route

#: Gram route is considered only while its ``P`` Gram matrices fit in this many bytes.
GRAM_MEMORY_BYTES = 2 * 2**30


def choose_route(n: int, dims: Sequence[int], n_pairs: int | None = None) -> Literal["moments", "gram"]:
    """Pick the cheaper exact route for linear/debiased CKA over P reps of widths ``dims``
    sharing ``n`` rows.

    Cost model (flops, both routes exact):

    - moments: one pass, ``n·D²`` with ``D = Σ d_p`` (all ``P(P+1)/2`` blocks by GEMM/SYRK),
      plus ``Σ_pairs d_i·d_j`` to read each pair;
    - gram: ``Σ_p n²·d_p`` to build the centred Grams plus ``n²`` per pair for their inner
      products, and ``P·n²·8`` bytes of memory — allowed only under ``GRAM_MEMORY_BYTES``.

    The Gram route wins when ``n`` is small relative to ``D`` (roughly ``n < D`` for one pair).
    ``n_pairs`` defaults to all ``P(P+1)/2`` pairs. It is exact only on all ``n`` rows: a plan
    asks :func:`plan_route`, which also checks that the row sample holds them.
    """
    dims = [int(d) for d in dims]
    p = len(dims)
    if p < 1 or n < 1:
        raise InvalidInput(f"choose_route needs n >= 1 and at least one rep, got n={n}, dims={dims}")
    pairs = p * (p + 1) // 2 if n_pairs is None else int(n_pairs)
    total = sum(dims)
    moments = float(n) * total * total + pairs * max(dims) ** 2
    gram = float(n) ** 2 * total + float(n) ** 2 * pairs
    if p * float(n) ** 2 * 8 > GRAM_MEMORY_BYTES:
        return "moments"
    return "gram" if gram < moments else "moments"


def plan_route(spec: MeasureSpec, n: int, dims: Sequence[int], n_pairs: int, *, stderr: bool = False) -> Route:
    """The route a plan computes ``spec`` on, in a row space of ``n`` rows whose uncomputed
    array-route tasks (``n_pairs`` of them) involve reps of widths ``dims``.

    Gram- and model-route measures run on their own route. A moments-route measure with an
    exact Gram form (``spec.has_gram_form``: linear and debiased CKA) runs on the Gram route
    when that is exact — a plan samples ``DEFAULT_SAMPLE`` rows, so only while
    ``n <= DEFAULT_SAMPLE`` — and :func:`choose_route` finds it cheaper; never with ``stderr``
    (the jackknife needs the moments). ``explain()`` and the executor both ask this function.
    """
    if not spec.has_gram_form or stderr or n > DEFAULT_SAMPLE:
        return spec.route
    return choose_route(n, dims, n_pairs)
