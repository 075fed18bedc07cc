"""The stabilised Gibbs kernel behind ``sinkhorn`` and ``ipot``: dense, or truncated to a support.

Both solvers are scaling algorithms on ``K_ij = exp((F_i + G_j - C_ij) / eps)`` with *absorbed*
log-potentials ``(F, G)`` in the ``a (x) b`` convention: the plan is
``P = diag(a u) K diag(b v)`` and only the scalings ``(u, v)`` change between absorptions
(Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy regularized transport
problems", Alg. 2-3). Facts measured on the 2-core CPU this project targets, n = m = 2048,
float32, shape this module:

* a dense matvec costs ~0.45 ms and an in-place ``exp`` pass ~1.5 ms, but allocating a fresh
  16 MB temporary ~5 ms (page faults): the dense kernel lives in a reused workspace and every
  dense pass writes in place;
* once the plan concentrates, keeping only the entries with ``P_ij > exp(-trunc) a_i b_j``
  makes a matvec ~0.1 ms (CSR, int32 indices: 2.5x faster than int64).

Truncation may slow convergence but cannot hide an error: the callers certify their result
with :meth:`lower_bound`, computed on the *dense* cost, and grow the support when it stalls.
Exponents are clamped to ``[-CLAMP, CLAMP]``: below, so that ``exp`` never produces float32
denormals (they made one solve 10x slower here; a clamped entry is ~1e-35, i.e. zero for the
plan); above, so that entries a support growth adds with a negative reduced cost (potentials
not yet feasible there) stay finite until the scalings absorb them.

Batched problems ``(B, n, m)`` are solved at once: dense with ``bmm``, sparse as one
block-diagonal ``(B n, B m)`` matrix.
"""

from __future__ import annotations

import math

import torch

CLAMP = 80.0  # exp(-80) ~ 1.8e-35 is still a normal float32
SHRINK_BELOW = 0.7  # measured: 0.25-0.7 equal, never shrinking 1.4-2.6x slower
_WORKSPACE: dict[tuple, torch.Tensor] = {}


def workspace(shape, dtype: torch.dtype, device: torch.device, slot: int = 0) -> torch.Tensor:
    """A reused scratch tensor per (shape, dtype, device, slot): avoids page-faulting a fresh
    large allocation at every solve. Not safe for concurrent solves of one shape in threads."""
    key = (tuple(shape), dtype, str(device), slot)
    buf = _WORKSPACE.get(key)
    if buf is None:
        if len(_WORKSPACE) > 8:
            _WORKSPACE.clear()
        buf = _WORKSPACE[key] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def batched_dot(P: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``<P_b, C_b>`` for each batch element, without a (B, n, m) temporary."""
    B = P.shape[0]
    return torch.bmm(P.reshape(B, 1, -1), C.reshape(B, -1, 1)).reshape(B)


class Kernel:
    """``K = exp((F (+) G - C) / eps)`` on a dense workspace or a sparse support.

    ``C`` is ``(B, n, m)``; ``F``, ``G`` are ``(B, n)``, ``(B, m)``; vectors passed to
    :meth:`mv` / :meth:`rmv` are ``(B, m)`` / ``(B, n)``.

    Parameters
    ----------
    trunc : float
        Support of the sparse kernel: entries with ``(F_i + G_j - C_ij) / eps > -trunc``.
    """

    def __init__(self, C: torch.Tensor, trunc: float = 30.0):
        self.C, self.trunc = C, trunc
        self.B, self.n, self.m = C.shape
        self.sparse = False
        self.buf = workspace(C.shape, C.dtype, C.device)

    # -- building ------------------------------------------------------------------------------
    def exponent(self, F, G, eps) -> torch.Tensor:
        """``(F + G - C) / eps`` in the dense workspace (3 in-place passes)."""
        E = torch.sub(F[:, :, None], self.C, out=self.buf)
        return E.add_(G[:, None, :]).mul_(1.0 / eps)

    def set(self, F: torch.Tensor, G: torch.Tensor, eps: float) -> None:
        """Recompute the kernel for absorbed potentials ``(F, G)`` and regularisation ``eps``."""
        if self.sparse:
            e = (F.reshape(-1)[self.rows] + G.reshape(-1)[self.cols] - self.c_e).mul_(1.0 / eps)
            self.vals = e.clamp_(-CLAMP, CLAMP).exp_()
            self.K = torch.sparse_csr_tensor(
                self.crow, self.cols32, self.vals, size=(self.B * self.n, self.B * self.m)
            )
            self.KT = torch.sparse_csr_tensor(
                self.crow_t,
                self.rows_t,
                self.vals[self.perm_t],
                size=(self.B * self.m, self.B * self.n),
            )
        else:
            self.K = self.exponent(F, G, eps).clamp_(-CLAMP, CLAMP).exp_()

    def sparsify(
        self, F, G, eps, mask: torch.Tensor | None = None, max_density: float = 1.0
    ) -> bool:
        """Switch to the support ``{(F + G - C)/eps > -trunc}`` unless it holds more than
        ``max_density`` of the entries; return whether the kernel is now sparse.

        ``mask`` may pass that boolean support when the caller already computed it."""
        if mask is None:
            mask = self.exponent(F, G, eps) > -self.trunc
        idx = mask.view(self.B * self.n, self.m).nonzero()
        if idx.shape[0] > max_density * mask.numel():
            return False
        rows = idx[:, 0]
        cols = idx[:, 1] + torch.div(rows, self.n, rounding_mode="floor") * self.m
        # every row and column must keep an entry, or a scaling divides by zero; c-transformed
        # potentials put a zero reduced cost in each, so this is rare: add the best entries
        rdeg = torch.bincount(rows, minlength=self.B * self.n)
        cdeg = torch.bincount(cols, minlength=self.B * self.m)
        if bool((rdeg == 0).any()) or bool((cdeg == 0).any()):
            E = self.exponent(F, G, eps)
            mask = E > -self.trunc
            mask.scatter_(-1, E.argmax(-1, keepdim=True), True)
            mask.scatter_(-2, E.argmax(-2, keepdim=True), True)
            idx = mask.view(self.B * self.n, self.m).nonzero()
            rows = idx[:, 0]
            cols = idx[:, 1] + torch.div(rows, self.n, rounding_mode="floor") * self.m
        self._set_support(rows, cols)
        self.sparse = True
        return True

    def _from_mask(self, mask: torch.Tensor) -> None:
        idx = mask.view(self.B * self.n, self.m).nonzero()
        rows = idx[:, 0]
        self._set_support(rows, idx[:, 1] + torch.div(rows, self.n, rounding_mode="floor") * self.m)

    def _set_support(
        self, rows: torch.Tensor, cols: torch.Tensor, perm_t: torch.Tensor | None = None
    ) -> None:
        """Rows/cols are global indices of the block-diagonal (B n, B m) matrix, row-sorted;
        ``perm_t`` (the column-sorted order) is recomputed unless given."""
        Bn, Bm = self.B * self.n, self.B * self.m
        self.rows, self.cols = rows, cols
        # int32 CSR indices: torch's CSR matvec is ~2.5x faster with them than with int64
        self.crow = torch.zeros(Bn + 1, dtype=torch.int32, device=rows.device)
        self.crow[1:] = torch.cumsum(torch.bincount(rows, minlength=Bn), 0)
        self.cols32 = cols.to(torch.int32)
        self.c_e = self.C.reshape(-1)[self._flat()]
        # stable sort of int32 keys: 2x faster than argsort of the int64 ones
        self.perm_t = torch.sort(self.cols32, stable=True).indices if perm_t is None else perm_t
        self.rows_t = rows[self.perm_t].to(torch.int32)
        self.crow_t = torch.zeros(Bm + 1, dtype=torch.int32, device=rows.device)
        self.crow_t[1:] = torch.cumsum(torch.bincount(cols, minlength=Bm), 0)

    def _flat(self) -> torch.Tensor:
        """Flat index into ``C.reshape(-1)`` of each support entry."""
        b = torch.div(self.rows, self.n, rounding_mode="floor")
        return self.rows * self.m + (self.cols - b * self.m)

    def _support_exponent(self, F, G, eps) -> torch.Tensor:
        return (F.reshape(-1)[self.rows] + G.reshape(-1)[self.cols] - self.c_e) / eps

    def shrink(self, F, G, eps) -> int:
        """Drop support entries that fell below ``-trunc`` at ``eps`` (no dense pass), keeping
        each row's and column's best entry."""
        e = self._support_exponent(F, G, eps)
        keep = e > -self.trunc
        Bn, Bm = self.B * self.n, self.B * self.m
        rmax = torch.full((Bn,), -math.inf, dtype=e.dtype, device=e.device).scatter_reduce_(
            0, self.rows, e, "amax"
        )
        cmax = torch.full((Bm,), -math.inf, dtype=e.dtype, device=e.device).scatter_reduce_(
            0, self.cols, e, "amax"
        )
        keep |= (e >= rmax[self.rows]) | (e >= cmax[self.cols])
        if float(keep.sum()) > SHRINK_BELOW * keep.numel():
            return self.nnz  # rebuilding costs ~10 matvecs: only worth it for a large cut
        # the column-sorted order of a subset is the old one filtered and renumbered: no sort
        new_index = torch.cumsum(keep, 0) - 1
        perm_t = new_index[self.perm_t[keep[self.perm_t]]]
        self._set_support(self.rows[keep], self.cols[keep], perm_t)
        return self.nnz

    def grow(self, F, G, eps) -> int:
        """Add every entry active at ``eps`` to the support (one dense pass); return the number
        of entries added."""
        before = self.nnz
        mask = self.exponent(F, G, eps) > -self.trunc
        mask.view(-1)[self._flat()] = True
        self._from_mask(mask)
        return self.nnz - before

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

    def inner(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``<diag(u) K diag(v), C>`` per batch element (B,)."""
        if self.sparse:
            kc = self.vals * self.c_e * u.reshape(-1)[self.rows] * v.reshape(-1)[self.cols]
            return torch.zeros(self.B, dtype=kc.dtype, device=kc.device).index_add_(
                0, torch.div(self.rows, self.n, rounding_mode="floor"), kc
            )
        KC = torch.mul(self.K, self.C, out=workspace(self.C.shape, self.C.dtype, self.C.device, 1))
        return (torch.bmm(KC, v[:, :, None])[:, :, 0] * u).sum(-1)

    def rounded(self, u: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
        """Round ``diag(u) K diag(v)`` onto ``Pi(a, b)`` (Altschuler, Weed & Rigollet 2017, Alg. 2).

        Returns ``(u', v', err_a, err_b, value)``: the feasible plan is
        ``diag(u') K diag(v') + err_a err_b^T / |err_a|_1`` and ``value`` its ``<P, C>`` (B,),
        computed without materialising it.
        """
        tiny = torch.finfo(u.dtype).tiny
        u = u * (a / (u * self.mv(v)).clamp_min(tiny)).clamp(max=1)
        v = v * (b / (v * self.rmv(u)).clamp_min(tiny)).clamp(max=1)
        err_a = (a - u * self.mv(v)).clamp_min(0)
        err_b = (b - v * self.rmv(u)).clamp_min(0)
        mass = err_a.sum(-1).clamp_min(tiny)
        corr = (torch.bmm(self.C, err_b[:, :, None])[:, :, 0] * err_a).sum(-1) / mass
        return u, v, err_a, err_b, self.inner(u, v) + corr

    def lower_bound(self, F: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """A certified lower bound on OT (B,): the dual value of the double c-transform
        ``g_j = min_i C_ij - F_i``, ``f_i = min_j C_ij - g_j`` (feasible: ``f_i + g_j <= C_ij``),
        computed on the dense cost, so it holds whatever support the iterations used."""
        f, g = self.ctransform(F)
        return (a * f).sum(-1) + (b * g).sum(-1)

    def ctransform(self, F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The double c-transform ``(f, g)`` of ``F`` on the dense cost: dual-feasible,
        ``f_i + g_j <= C_ij``, the potentials of a certified result."""
        # slot 1: in dense mode the kernel itself lives in the main workspace
        buf = workspace(self.C.shape, self.C.dtype, self.C.device, 1)
        g = torch.sub(self.C, F[:, :, None], out=buf).amin(-2)
        f = torch.sub(self.C, g[:, None, :], out=buf).amin(-1)
        return f, g

    def support_lower_bound(
        self, F: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> torch.Tensor:
        """The double c-transform restricted to the support: no bound (it is >= the dense one),
        but a free test of whether the dense certificate can pass."""
        if not self.sparse:
            return self.lower_bound(F, a, b)
        Bn, Bm = self.B * self.n, self.B * self.m
        inf = torch.tensor(math.inf, dtype=self.C.dtype, device=self.C.device)
        g = (
            inf.expand(Bm)
            .clone()
            .scatter_reduce_(0, self.cols, self.c_e - F.reshape(-1)[self.rows], "amin")
        )
        f = inf.expand(Bn).clone().scatter_reduce_(0, self.rows, self.c_e - g[self.cols], "amin")
        return (a * f.view(self.B, self.n)).sum(-1) + (b * g.view(self.B, self.m)).sum(-1)

    def plan(
        self,
        u: torch.Tensor,
        v: torch.Tensor,
        err_a: torch.Tensor | None = None,
        err_b: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The dense plan ``diag(u) K diag(v)`` (+ the rounding term ``err_a err_b^T / |err_a|``)
        as a new ``(B, n, m)`` tensor."""
        if self.sparse:
            P = torch.zeros(self.C.shape, dtype=self.C.dtype, device=self.C.device)
            P.view(-1)[self._flat()] = (
                u.reshape(-1)[self.rows] * self.vals * v.reshape(-1)[self.cols]
            )
        else:
            P = torch.mul(self.K, u[:, :, None]).mul_(v[:, None, :])
        if err_a is not None:
            assert err_b is not None  # the rounding's two errors come together
            mass = err_a.sum(-1).clamp_min(torch.finfo(u.dtype).tiny)
            P.baddbmm_((err_a / mass[:, None])[:, :, None], err_b[:, None, :])
        return P

    @property
    def nnz(self) -> int:
        return int(self.rows.numel()) if self.sparse else self.B * self.n * self.m
