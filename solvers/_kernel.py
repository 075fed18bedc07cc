"""The stabilised kernel behind ``sinkhorn`` and ``ipot``: dense, or truncated to a sparse support.

Both solvers are scaling algorithms on the Gibbs kernel ``K_ij = exp((f_i + g_j - C_ij) / eps)``
where ``(f, g)`` are *absorbed* log-potentials and the iterations only update the scalings
``(u, v)``, so ``P = diag(u) K diag(v)`` (Schmitzer 2019, "Stabilized sparse scaling algorithms
for entropy regularized transport problems", Alg. 2-3). Two facts measured on a 2-core CPU at
n = m = 2048 shape this module:

* one matvec with a dense float32 ``K`` costs ~0.45 ms, an ``exp`` pass ~1.5 ms, but allocating
  a fresh 16 MB temporary ~5 ms (page faults): so the dense kernel lives in a reused workspace
  and every pass writes in place;
* once ``eps`` is small the kernel is numerically sparse; keeping only the entries whose
  reduced cost ``C_ij - f_i - g_j`` is below ``TRUNC * eps`` (``exp(-TRUNC)`` ~ 1e-13) makes a
  matvec ~40 us (CSR, 40k entries). The support is checked against the dense cost once at the
  end (and rebuilt if an entry outside it became active), so truncation never changes the
  answer beyond ``exp(-TRUNC)``.

Exponents are clamped at ``-CLAMP`` so that ``exp`` never produces float32 denormals (they made
one solve 10x slower here); a clamped entry is ~1e-35, i.e. zero for the plan.

Batched problems ``(B, n, m)`` are solved at once: dense with ``bmm``, sparse as one
block-diagonal ``(B n, B m)`` matrix.
"""
from __future__ import annotations

import math

import torch

TRUNC = 30.0  # drop kernel entries below exp(-TRUNC)
CLAMP = 80.0  # exp(-80) ~ 1.8e-35 is still a normal float32
_WORKSPACE: dict[tuple, torch.Tensor] = {}


def workspace(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A reused scratch tensor (one per shape/dtype/device): avoids page-faulting a fresh large
    allocation at every solve. Not thread-safe across concurrent solves of the same shape."""
    key = (tuple(shape), dtype, str(device))
    buf = _WORKSPACE.get(key)
    if buf is None:
        if len(_WORKSPACE) > 8:
            _WORKSPACE.clear()
        buf = _WORKSPACE[key] = torch.empty(shape, dtype=dtype, device=device)
    return buf


class Kernel:
    """``K = exp((f (+) g - C) / eps)`` on a dense workspace or a sparse support.

    ``C`` is ``(B, n, m)``; ``f``, ``g`` are ``(B, n)``, ``(B, m)``; vectors passed to
    :meth:`mv` / :meth:`rmv` are ``(B, m)`` / ``(B, n)``.
    """

    def __init__(self, C: torch.Tensor):
        self.C = C
        self.B, self.n, self.m = C.shape
        self.sparse = False
        self.dense_buf: torch.Tensor | None = None

    # -- dense ---------------------------------------------------------------------------------
    def _dense_exponent(self, f, g, eps) -> torch.Tensor:
        if self.dense_buf is None:
            self.dense_buf = workspace(self.C.shape, self.C.dtype, self.C.device)
        K = self.dense_buf
        torch.sub(f[:, :, None], self.C, out=K)
        K.add_(g[:, None, :]).mul_(1.0 / eps)
        return K

    def set(self, f: torch.Tensor, g: torch.Tensor, eps: float) -> None:
        """Recompute the kernel for absorbed potentials ``(f, g)`` and regularisation ``eps``."""
        if self.sparse:
            self.vals = ((f.reshape(-1)[self.rows] + g.reshape(-1)[self.cols] - self.c_e) / eps) \
                .clamp_(min=-CLAMP).exp_()
            self.K = torch.sparse_csr_tensor(self.crow, self.cols, self.vals,
                                             size=(self.B * self.n, self.B * self.m))
            self.KT = torch.sparse_csr_tensor(self.crow_t, self.rows_t, self.vals[self.perm_t],
                                              size=(self.B * self.m, self.B * self.n))
        else:
            self._dense_exponent(f, g, eps).clamp_(min=-CLAMP).exp_()
            self.K = self.dense_buf

    def density(self) -> float:
        """Fraction of dense-kernel entries above ``exp(-TRUNC)`` (dense mode only)."""
        return float((self.K > math.exp(-TRUNC)).sum()) / self.K.numel()

    def sparsify(self, f: torch.Tensor, g: torch.Tensor, eps: float) -> int:
        """Switch to the sparse support ``{C - f - g < TRUNC eps}``; return its size."""
        E = self._dense_exponent(f, g, eps)  # (f + g - C) / eps
        mask = (E > -TRUNC)
        # every row and column keeps at least its best entry, so no scaling divides by zero
        bi = torch.arange(self.B, device=E.device)[:, None]
        mask[bi, torch.arange(self.n, device=E.device)[None, :], E.argmax(-1)] = True
        mask[bi, E.argmax(-2), torch.arange(self.m, device=E.device)[None, :]] = True
        idx = mask.view(self.B * self.n, self.m).nonzero()
        rows = idx[:, 0]
        cols = idx[:, 1] + (rows // self.n) * self.m  # block-diagonal column index
        self._set_support(rows, cols)
        self.sparse = True
        return int(rows.numel())

    def _set_support(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        Bn, Bm = self.B * self.n, self.B * self.m
        self.rows, self.cols = rows, cols
        self.crow = torch.zeros(Bn + 1, dtype=torch.int64, device=rows.device)
        self.crow[1:] = torch.cumsum(torch.bincount(rows, minlength=Bn), 0)
        # cost entries of the support (C is (B, n, m); global row r -> (r // n, r % n))
        local_c = cols - (rows // self.n) * self.m
        self.c_e = self.C.reshape(Bn, self.m)[rows, local_c]
        self.perm_t = torch.argsort(cols, stable=True)
        self.rows_t = rows[self.perm_t]
        self.crow_t = torch.zeros(Bm + 1, dtype=torch.int64, device=rows.device)
        self.crow_t[1:] = torch.cumsum(torch.bincount(cols, minlength=Bm), 0)

    def missing(self, f: torch.Tensor, g: torch.Tensor, eps: float) -> int:
        """Number of entries outside the sparse support whose reduced cost is below
        ``TRUNC * eps`` (one dense pass). 0 means the truncated problem is the full one."""
        E = self._dense_exponent(f, g, eps)
        active = int((E > -TRUNC).sum())
        e_support = (f.reshape(-1)[self.rows] + g.reshape(-1)[self.cols] - self.c_e) / eps
        return active - int((e_support > -TRUNC).sum())

    def grow(self, f: torch.Tensor, g: torch.Tensor, eps: float) -> int:
        """Rebuild the support as the union of the old one and the active entries."""
        E = self._dense_exponent(f, g, eps)
        mask = (E > -TRUNC).view(self.B * self.n, self.m)
        local_c = self.cols - (self.rows // self.n) * self.m
        mask[self.rows, local_c] = True
        idx = mask.nonzero()
        rows = idx[:, 0]
        self._set_support(rows, idx[:, 1] + (rows // self.n) * self.m)
        return int(rows.numel())

    # -- products ------------------------------------------------------------------------------
    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """``K v`` -> ``(B, n)``."""
        if self.sparse:
            return (self.K @ v.reshape(-1)).view(self.B, self.n)
        return torch.bmm(self.K, v[:, :, None])[:, :, 0]

    def rmv(self, u: torch.Tensor) -> torch.Tensor:
        """``K^T u`` -> ``(B, m)``."""
        if self.sparse:
            return (self.KT @ u.reshape(-1)).view(self.B, self.m)
        return torch.bmm(u[:, None, :], self.K)[:, 0, :]

    def plan(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The dense plan ``diag(u) K diag(v)`` as a new ``(B, n, m)`` tensor."""
        if self.sparse:
            P = torch.zeros(self.B * self.n * self.m, dtype=self.C.dtype, device=self.C.device)
            flat = self.rows * self.m + (self.cols - (self.rows // self.n) * self.m)
            P[flat] = u.reshape(-1)[self.rows] * self.vals * v.reshape(-1)[self.cols]
            return P.view(self.B, self.n, self.m)
        return self.K * u[:, :, None] * v[:, None, :]

    @property
    def nnz(self) -> int:
        return int(self.rows.numel()) if self.sparse else self.B * self.n * self.m

