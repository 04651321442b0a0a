"""The measure registry: :class:`MeasureSpec`, :data:`REGISTRY`, :func:`register`, :func:`get_measure`.

A spec is everything the engine knows about a measure: its parameters (defaults read from the
measure function's signature), how it is computed on each route (``from_moments``,
``from_rows``, the per-rep :class:`Prepared` split), and which route it runs on
(:func:`actdb.query.measures.plan_route` reads the spec). A measure whose module imports the
registry (stitching) is listed here by :class:`Imported` references, resolved when first used.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from actdb.errors import InvalidInput, NotFound, close_matches

if TYPE_CHECKING:
    import numpy as np

Kind = Literal["similarity", "distance"]
Route = Literal["moments", "gram", "model"]

#: Keywords of the array API that choose how a value is computed, not which value: never
#: measure parameters (not in a plan's parameters, not in a cache key).
CALL_OPTIONS = frozenset({"stderr", "shards", "route", "precision"})
#: A moments-route measure's row sample for its optional Gram form: also call options.
GRAM_FORM_OPTIONS = frozenset({"sample", "seed"})


class Imported:
    """An object named by import path, ``"package.module:name"``, imported on first use.

    Lets the registry list a measure whose implementing module itself imports the registry
    (``actdb.query.stitching``) without an import cycle or an import for its side effect.
    Calling it calls the named object.
    """

    def __init__(self, path: str) -> None:
        module, sep, name = path.partition(":")
        if not (sep and module and name):
            raise InvalidInput(f"an import path is 'package.module:name', got {path!r}")
        self.path = path

    def get(self) -> Any:
        module, _, name = self.path.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.get()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Imported({self.path!r})"


class ImportedParams(Mapping[str, Any]):
    """A parameter-defaults mapping defined by another module, read through :class:`Imported`."""

    def __init__(self, path: str) -> None:
        self._ref = Imported(path)

    def _get(self) -> Mapping[str, Any]:
        value: Mapping[str, Any] = self._ref.get()
        return value

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return f"ImportedParams({self._ref.path!r})"


class _FromSignature(Mapping[str, Any]):
    """Marker default of :attr:`MeasureSpec.params`: read the defaults from ``func``."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    __hash__ = object.__hash__  # one shared marker instance (a dataclass default must be hashable)


FROM_SIGNATURE: Mapping[str, Any] = _FromSignature()


def signature_params(func: Callable[..., Any], route: Route) -> dict[str, Any]:
    """The measure parameters of ``func(X, Y, *, ...)`` with their defaults, in signature
    order: every keyword after the two arrays, less :data:`CALL_OPTIONS` (and, for a
    moments-route measure, its Gram form's ``sample``/``seed``)."""
    skip = CALL_OPTIONS | (GRAM_FORM_OPTIONS if route == "moments" else frozenset())
    out: dict[str, Any] = {}
    for i, p in enumerate(inspect.signature(func).parameters.values()):
        if i < 2 or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in skip:
            continue
        if p.default is p.empty:
            raise InvalidInput(f"measure parameter {p.name!r} of {func.__qualname__} needs a default")
        out[p.name] = p.default
    return out


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A Gram-route measure split into a per-rep ``prepare`` and a per-pair ``compare``, so a
    plan over P reps builds each rep's ``(m, m)`` kernel (RDM, neighbour sets) once:
    ``compare(prepare(X, p), prepare(Y, p), p) == from_rows(X, Y, **p)``.

    - ``key(params)``: reps prepared under equal keys share their state across measures;
    - ``applies(params)``: whether the split is exact for these parameters (else pairwise).
    """

    key: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    prepare: Callable[[np.ndarray, Mapping[str, Any]], Any]
    compare: Callable[[Any, Any, Mapping[str, Any]], float]
    applies: Callable[[Mapping[str, Any]], bool] = lambda _params: True


@dataclass(frozen=True, kw_only=True)
class MeasureSpec:
    """Metadata and implementations of one measure (built by keyword).

    - ``func(X, Y, **params) -> float``: the array API;
    - ``params``: parameter name → default, read from ``func``'s signature unless given
      (row-sampling ``sample``/``seed`` included for Gram-route measures);
    - ``route``: ``"moments"``, ``"gram"`` or ``"model"`` (needs the models themselves);
    - ``from_moments(PairMoments, **params) -> float`` for route ``"moments"`` (else ``None``);
    - ``from_rows(X, Y, **params) -> float`` on already-sampled float64 rows: the Gram route's
      implementation; on a moments-route measure its exact Gram form (linear and debiased
      CKA), which a plan runs when cheaper (:func:`~actdb.query.measures.plan_route`);
    - ``prepared``: the per-rep/per-pair split of ``from_rows`` (:class:`Prepared`), if any;
    - ``task_params(given, rep_b) -> dict``: the parameters a plan's task runs with, where they
      depend on the reps (stitching's objective); default: :meth:`resolve_params`;
    - ``value_range``: closed bounds of the value; ``symmetric``: ``m(X, Y) == m(Y, X)``;
    - ``min_rows``: the fewest rows the measure is defined on;
    - ``row_norms``: ``from_moments`` reads the row-norm sums (``PairMoments.sum_kk`` ...),
      which an accumulator then has to collect (:meth:`Moments.empty` ``row_norms``).
    """

    name: str
    func: Callable[..., Any]
    kind: Kind
    value_range: tuple[float, float]
    route: Route
    citation: str
    params: Mapping[str, Any] = FROM_SIGNATURE
    symmetric: bool = True
    min_rows: int = 2
    row_norms: bool = False
    from_moments: Callable[..., float] | None = None
    from_rows: Callable[..., float] | None = None
    prepared: Prepared | None = None
    task_params: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
    description: str = ""
    conventions: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("similarity", "distance"):
            raise InvalidInput(f"measure kind must be 'similarity' or 'distance', got {self.kind!r}")
        if self.route not in ("moments", "gram", "model"):
            raise InvalidInput(f"measure route must be moments, gram or model, got {self.route!r}")
        if self.route == "moments" and self.from_moments is None:
            raise InvalidInput(f"moments-route measure {self.name!r} needs from_moments")
        if self.route == "gram" and self.from_rows is None:
            raise InvalidInput(f"gram-route measure {self.name!r} needs from_rows")
        if self.prepared is not None and self.from_rows is None:
            raise InvalidInput(f"measure {self.name!r} has a prepared form but no from_rows")
        if self.params is FROM_SIGNATURE:
            if isinstance(self.func, Imported):
                raise InvalidInput(f"measure {self.name!r} is imported lazily: give its params")
            object.__setattr__(self, "params", signature_params(self.func, self.route))

    @property
    def has_gram_form(self) -> bool:
        """A moments-route measure that can also run, exactly, on the Gram route."""
        return self.route == "moments" and self.from_rows is not None

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
    """Add ``spec`` to :data:`REGISTRY`; an existing name needs ``replace=True``."""
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
