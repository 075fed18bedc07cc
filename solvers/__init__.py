"""OT solvers behind one contract: ``solve``, ``solve_sample``, a registry of methods.

>>> import torch
>>> from solvers import solve
>>> res = solve(torch.rand(5, 7), method="emd")
>>> res.plan.shape
torch.Size([5, 7])

``otransfer list solvers`` lists the methods; docs/plugins.md adds one.
"""

from ._api import solve, solve_sample
from ._costs import COSTS, cost_matrix
from ._quiet import quiet_keops
from ._registry import MethodInfo, all_methods, available, get_method, register
from ._result import OTResult

__all__ = [
    "solve",
    "solve_sample",
    "OTResult",
    "available",
    "all_methods",
    "get_method",
    "register",
    "MethodInfo",
    "cost_matrix",
    "COSTS",
    "quiet_keops",
]
