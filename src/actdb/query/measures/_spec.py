"""The measure registry: :class:`MeasureSpec`, :data:`REGISTRY`, :func:`register`, :func:`get_measure`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from actdb.errors import InvalidInput, NotFound, close_matches

Kind = Literal["similarity", "distance"]
Route = Literal["moments", "gram", "model"]


@dataclass(frozen=True)
class MeasureSpec:
    """Metadata and implementations of one measure.

    - ``func(X, Y, **params) -> float``: the array API;
    - ``from_moments(PairMoments, **params) -> float`` for route ``"moments"`` (else ``None``);
    - ``from_rows(X, Y, **params) -> float`` on already-sampled float64 rows for route
      ``"gram"`` (else ``None``);
    - ``params``: parameter name → default (row-sampling parameters included);
    - ``value_range``: closed bounds of the value; ``symmetric``: ``m(X, Y) == m(Y, X)``;
    - ``row_norms``: ``from_moments`` reads the row-norm sums (``PairMoments.sum_kk`` ...),
      which an accumulator then has to collect (:meth:`Moments.empty` ``row_norms``).
    """

    name: str
    func: Callable[..., Any]
    kind: Kind
    value_range: tuple[float, float]
    route: Route
    params: Mapping[str, Any]
    citation: str
    from_moments: Callable[..., float] | None = None
    symmetric: bool = True
    from_rows: Callable[..., float] | None = None
    description: str = ""
    conventions: str = field(default="", compare=False)
    row_norms: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("similarity", "distance"):
            raise InvalidInput(f"measure kind must be 'similarity' or 'distance', got {self.kind!r}")
        if self.route not in ("moments", "gram", "model"):
            raise InvalidInput(f"measure route must be moments, gram or model, got {self.route!r}")
        if self.route == "moments" and self.from_moments is None:
            raise InvalidInput(f"moments-route measure {self.name!r} needs from_moments")

    def resolve_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``given``; unknown names raise :class:`InvalidInput`."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            valid = ", ".join(sorted(self.params)) or "none"
            raise InvalidInput(
                f"measure {self.name!r} has no parameter {unknown[0]!r}; valid parameters: {valid}"
            )
        return {**self.params, **given}


REGISTRY: dict[str, MeasureSpec] = {}


def register(spec: MeasureSpec, *, replace: bool = False) -> MeasureSpec:
    """Add ``spec`` to :data:`REGISTRY` (e.g. ``stitching``, route ``"model"``, from another module)."""
    if spec.name in REGISTRY and not replace:
        raise InvalidInput(f"measure {spec.name!r} is already registered; pass replace=True")
    REGISTRY[spec.name] = spec
    return spec


def get_measure(name: str) -> MeasureSpec:
    """The spec registered as ``name``; :class:`NotFound` lists the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        hint = close_matches(name, REGISTRY)
        known = ", ".join(sorted(REGISTRY))
        raise NotFound(f"unknown measure {name!r}; {hint} Known measures: {known}") from None
