"""Validation of a method's parameters, once, in front of every method (``solve``,
``solve_sample``): a wrong type or a value outside its range is a one-line ValueError naming the
parameter, never a ``TypeError`` from deep inside a solver.

The type of each parameter is that of its registered default (``bool``, ``int``, ``float``,
``str``); the ranges below are the field's conventions (POT, GeomLoss, OTT-JAX).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_params"]

POSITIVE = frozenset({"reg", "beta", "blur", "eps"})  # accuracy parameters: > 0, finite
NON_NEGATIVE = frozenset({"gap", "tol"})  # 0 switches a stopping rule off
AT_LEAST_ONE = frozenset({"max_iter", "check_every", "num_threads"})
OPEN_UNIT = frozenset({"scaling"})  # eps-scaling factors, in (0, 1)


def _number(method: str, name: str, value: Any, integer: bool) -> float | int:
    what = "an integer" if integer else "a number"
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real)
    if not bad and integer and not float(value).is_integer():
        bad = True
    if bad:
        raise ValueError(
            f"parameter {name}={value!r} of method {method!r} must be {what}; "
            f"got {type(value).__name__}"
        )
    if not math.isfinite(float(value)):
        raise ValueError(f"parameter {name}={value!r} of method {method!r} must be finite")
    return int(value) if integer else float(value)


def _check_range(method: str, name: str, value: float | int) -> None:
    problem = None
    if name in POSITIVE and not value > 0:
        problem = "must be > 0"
    elif name in NON_NEGATIVE and not value >= 0:
        problem = "must be >= 0"
    elif name in AT_LEAST_ONE and not value >= 1:
        problem = "must be >= 1"
    elif name in OPEN_UNIT and not 0 < value < 1:
        problem = "must lie in (0, 1)"
    if problem:
        raise ValueError(f"parameter {name}={value!r} of method {method!r} {problem}")


def check_params(method: str, defaults: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Return ``params`` with numbers normalised to the type of their default (an integral
    float such as ``1e5`` for an integer parameter becomes ``100000``); raise ValueError on a
    wrong type or a value outside the parameter's range."""
    out = dict(params)
    for name, value in params.items():
        default = defaults.get(name)
        if default is None:
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(
                    f"parameter {name}={value!r} of method {method!r} must be "
                    f"True or False; got {type(value).__name__}"
                )
            continue
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(
                    f"parameter {name}={value!r} of method {method!r} must be a "
                    f"string; got {type(value).__name__}"
                )
            continue
        if isinstance(default, numbers.Real):
            out[name] = _number(method, name, value, integer=isinstance(default, numbers.Integral))
            _check_range(method, name, out[name])
    return out


def check_warmstart(method: str, warmstart: Any, batch: tuple[int, ...], n: int, m: int):
    """``warmstart=(f, g)`` of a ``(*batch, n, m)`` problem as two tensors of shapes
    ``(*batch, n)``, ``(*batch, m)`` (``(n,)``, ``(m,)`` broadcast over a batch); raise a
    one-line ValueError naming what is wrong otherwise."""
    import torch

    want = f"{(*batch, n)}, {(*batch, m)}"
    if not isinstance(warmstart, (tuple, list)) or len(warmstart) != 2:
        raise ValueError(
            f"warmstart of method {method!r} must be a pair (f, g) of potentials "
            f"of shapes {want} (a previous result's .potentials); got "
            f"{type(warmstart).__name__}"
        )
    out = []
    for name, p, size in (("f", warmstart[0], n), ("g", warmstart[1], m)):
        if not isinstance(p, torch.Tensor):
            p = torch.as_tensor(p)
        if p.is_complex() or not (p.is_floating_point() or p.dtype in (torch.int32, torch.int64)):
            raise ValueError(
                f"warmstart {name} of method {method!r} must be real numbers; got {p.dtype}"
            )
        if tuple(p.shape) not in ((*batch, size), (size,)):
            raise ValueError(
                f"warmstart {name} of method {method!r} has shape "
                f"{tuple(p.shape)}; expected {want} for a cost of shape "
                f"{(*batch, n, m)}: reset it when the problem's shape changes"
            )
        if not bool(torch.isfinite(p).all()):
            raise ValueError(
                f"warmstart {name} of method {method!r} has non-finite entries: "
                f"pass finite potentials, or None for a cold start"
            )
        out.append(p.detach().expand(*batch, size))
    return tuple(out)
