"""The registry of OT methods: each method is named once, where it is defined, with its
capabilities as data (style.md §1–2). CLI choices, Optuna categoricals and test parametrisation
are read back from here."""
from __future__ import annotations

import difflib
import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

__all__ = ["MethodInfo", "register", "get_method", "available", "all_methods"]

Input = Literal["cost", "points"]
Gradient = Literal["envelope", "autodiff", "none"]


@dataclass(frozen=True)
class MethodInfo:
    """Capabilities of one registered OT method.

    Attributes
    ----------
    name : str
        Registry name (``method=`` of :func:`solvers.solve`).
    fn : callable
        The implementation. Cost methods: ``fn(C, a, b, **params) -> dict``; point methods:
        ``fn(x, y, a, b, cost=..., **params) -> dict`` (see ``_api.py`` for the keys).
    input : {"cost", "points"}
        ``"cost"``: takes a cost matrix (``solve``; ``solve_sample`` builds it). ``"points"``:
        takes the point clouds (``solve_sample`` only), never materialising ``C``.
    exact : bool
        Solves the linear program exactly (up to floating point) at its default parameters.
    converges_to_exact : bool
        Approximate method whose value tends to the exact one as its accuracy parameter is
        tightened (IPOT, Sinkhorn with small ``reg``). ``value_rtol`` is the tolerance at defaults.
    value_rtol : float or None
        Relative error to exact OT that the method guarantees at its default parameters on the
        conformance problems; ``None`` when it does not approximate OT (fixed plans, REMD).
    returns_plan, potentials : bool
        Whether ``plan`` / ``(f, g)`` are returned.
    feasible_plan : bool
        The returned plan satisfies both marginals (up to ``tol``). False for REMD (one-sided).
    batched : bool
        Accepts ``(B, n, m)`` costs natively.
    square_only, uniform_only : bool
        Needs ``n == m`` / uniform marginals.
    gradient : {"envelope", "autodiff", "none"}
        How ``value`` is differentiated. ``"envelope"``: ``dvalue/dC = plan`` and
        ``dvalue/da, dvalue/db`` = centred potentials, valid at convergence and to first order
        (Danskin); attached by ``_envelope.attach``. A method may return its own
        ``value_fn`` where the envelope is not the derivative of its value (entropic plans
        and ipot's fixed steps at ``gap=0``); ``solve(grad="envelope")`` ignores it.
    devices : tuple of str
        Devices the method runs on.
    cost_range : bool
        The method accepts ``cost_range=(min C, max C)`` (a keyword ``solve`` fills in from its
        finiteness check, not a user parameter), so it need not pass over ``C`` again.
    requires : tuple of str
        Optional importable modules the method needs (``available()`` checks them).
    warmstart : bool
        Accepts ``solve(..., warmstart=(f, g))``: an initial value for its dual potentials
        (a previous result's ``.potentials``), as POT's ``warmstart`` and OTT's ``init``.
    params : Mapping[str, Any]
        Accepted parameters and their defaults. Anything else is rejected with a ValueError.
    description : str
        One line for ``otransfer list solvers``.
    """

    name: str
    fn: Callable[..., dict]
    input: Input = "cost"
    exact: bool = False
    converges_to_exact: bool = False
    value_rtol: float | None = None
    returns_plan: bool = True
    potentials: bool = False
    feasible_plan: bool = True
    batched: bool = False
    square_only: bool = False
    uniform_only: bool = False
    gradient: Gradient = "envelope"
    devices: tuple[str, ...] = ("cpu", "cuda")
    cost_range: bool = False
    requires: tuple[str, ...] = ()
    warmstart: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def is_available(self) -> bool:
        return all(module_available(mod) for mod in self.requires)

    @property
    def approximates_ot(self) -> bool:
        return self.exact or self.converges_to_exact


@functools.lru_cache(maxsize=None)
def module_available(mod: str) -> bool:
    """Whether ``mod`` can be imported; looked up once (``find_spec`` walks ``sys.path``:
    ~0.1 ms, paid on every solve before)."""
    return importlib.util.find_spec(mod) is not None


_REGISTRY: dict[str, MethodInfo] = {}


def register(name: str, **capabilities: Any) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Register ``fn`` as OT method ``name`` with its capabilities (decorator)."""

    def deco(fn: Callable[..., dict]) -> Callable[..., dict]:
        if name in _REGISTRY:
            raise ValueError(f"OT method {name!r} is already registered")
        _REGISTRY[name] = MethodInfo(name=name, fn=fn, **capabilities)
        return fn

    return deco


_LOADED: list[bool] = []


def _ensure_loaded() -> None:
    # Importing the implementation modules registers their methods (once: an import
    # statement costs microseconds on every solve).
    if not _LOADED:
        from . import _exact, _external, _fixed, _scaling  # noqa: F401

        _LOADED.append(True)
        _load_plugins()


def _load_plugins() -> None:
    """Import the modules the ``otransfer.solvers`` entry points name (their imports call
    :func:`register`); one that fails is skipped with one line on standard error."""
    import sys
    from importlib.metadata import entry_points

    for ep in entry_points(group="otransfer.solvers"):
        try:
            ep.load()
        except Exception as exc:
            line = " ".join(f"{type(exc).__name__}: {exc}".split())
            print(f"otransfer: solver plugin {ep.name!r} ({ep.value}, entry point group "
                  f"otransfer.solvers) failed to import and is skipped: {line}", file=sys.stderr)


def get_method(name: str) -> MethodInfo:
    """Look up a method; an unknown name raises ValueError listing the close matches."""
    if not _LOADED:
        _ensure_loaded()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        # case-insensitive, so the papers' spelling ("IPOT", "EMD") finds the method
        lower = {k.lower(): k for k in _REGISTRY}
        close = [lower[c] for c in
                 difflib.get_close_matches(str(name).lower(), list(lower), n=3, cutoff=0.5)]
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown OT method {name!r}{hint} Known methods: {', '.join(sorted(_REGISTRY))}"
        ) from None


def all_methods() -> dict[str, MethodInfo]:
    """Every registered method, installed or not, in registration order."""
    _ensure_loaded()
    return dict(_REGISTRY)


def available(**flags: Any) -> list[str]:
    """Names of the installed methods whose capabilities match ``flags``.

    Examples
    --------
    >>> available(exact=True)
    ['emd', 'assignment']
    >>> available(input="points")  # doctest: +SKIP
    ['geomloss', 'keops']
    """
    _ensure_loaded()
    fields = set(MethodInfo.__dataclass_fields__) | {"is_available", "approximates_ot"}
    unknown = set(flags) - fields
    if unknown:
        raise ValueError(f"unknown capability flag(s) {sorted(unknown)}; known: {sorted(fields)}")
    out = []
    for name, info in _REGISTRY.items():
        if not info.is_available:
            continue
        if all(getattr(info, k) == v for k, v in flags.items()):
            out.append(name)
    return out
