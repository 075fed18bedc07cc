"""The registry of OT methods: each method is named once, where it is defined, with its
capabilities as data. CLI choices, Optuna categoricals and test parametrisation
are read back from here."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from .registry import Registry

__all__ = ["MethodInfo", "METHODS", "register", "get_method", "available", "all_methods"]

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


def _builtins() -> None:
    # Importing the implementation modules registers their methods (once: the registry's
    # first lookup; a lookup then costs a dict access on every solve). _ipot and _pot_sinkhorn
    # import _scaling, so the order stays sinkhorn, ipot, pot_sinkhorn.
    from . import _exact, _external, _fixed, _ipot, _pot_sinkhorn, _scaling  # noqa: F401


#: The OT methods, by name (exact names only: ``"EMD"`` is suggested ``'emd'``, not found).
METHODS: Registry[MethodInfo] = Registry(
    "OT method",
    plural="methods",
    exact=True,
    preload=_builtins,
    entry_points="otransfer.solvers",
    make=lambda name, fn, **capabilities: MethodInfo(name=name, fn=fn, **capabilities),
)


def register(
    name: str, **capabilities: Any
) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Register ``fn`` as OT method ``name`` with its capabilities (decorator)."""
    return METHODS.register(name, **capabilities)


def get_method(name: str) -> MethodInfo:
    """Look up a method; an unknown name raises ValueError listing the close matches."""
    return METHODS.get(name)


def all_methods() -> dict[str, MethodInfo]:
    """Every registered method, installed or not, in registration order."""
    return dict(METHODS.items())


def available(**flags: Any) -> list[str]:
    """Names of the installed methods whose capabilities match ``flags``.

    Examples
    --------
    >>> available(exact=True)
    ['emd', 'assignment', 'exact']
    >>> available(input="points")  # doctest: +SKIP
    ['geomloss', 'keops']
    """
    return [n for n in METHODS.names(**flags) if METHODS.get(n).is_available]
