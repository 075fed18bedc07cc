"""Multi-process training helpers: the process group, rank queries, and the batch all-gather.

Training runs one process per device under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --nproc_per_node 8 -m harness.cli run SUITE --device cuda

Every function here is the identity (or a constant) in a single process, so callers never
branch on whether they are distributed::

    rank, world = init_from_env("cuda")     # (0, 1) without torchrun
    if is_main():
        job = claim_next_job()
    job = broadcast_object(job if is_main() else None)
    feats = gather_batch(local_feats)       # (sum of local n, d), differentiable

Queries (:func:`rank`, :func:`world_size`, :func:`is_main`) read the process group once it
exists and ``torchrun``'s environment before; collectives (:func:`barrier`,
:func:`broadcast_object`, :func:`gather_batch`) create the group on first use when the
environment asks for several processes.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "init_from_env",
    "rank",
    "world_size",
    "is_main",
    "is_distributed",
    "local_device",
    "barrier",
    "broadcast_object",
    "broadcast_",
    "all_gather_object",
    "any_rank",
    "all_reduce",
    "gather_batch",
]

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def _is_cuda(device: str | torch.device | None) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def local_device(device: str | torch.device) -> torch.device:
    """Return this process's device: ``"cuda"`` becomes ``cuda:LOCAL_RANK`` under torchrun.

    Parameters
    ----------
    device : str or torch.device
        A config's device. An explicit index (``"cuda:1"``) and non-CUDA devices are kept.

    Returns
    -------
    torch.device
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and _env_int("WORLD_SIZE", 1) > 1:
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return device


def init_from_env(device: str | torch.device | None = None) -> tuple[int, int]:
    """Join the process group that ``torchrun``'s environment describes (idempotent).

    Parameters
    ----------
    device : str or torch.device, optional
        The device training runs on; ``None`` means CUDA when available, else the CPU. CUDA
        uses the NCCL backend (and pins this process to ``cuda:LOCAL_RANK``); the CPU uses gloo.

    Returns
    -------
    (rank, world_size) : tuple of int
        ``(0, 1)`` when ``WORLD_SIZE`` is unset or 1: nothing is initialised.

    Notes
    -----
    The backend is chosen once, by the first call: under ``torchrun`` on GPUs, call this with
    the training device before anything else communicates (CPU tensors cannot go through NCCL).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if _env_int("WORLD_SIZE", 1) <= 1:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    use_nccl = _is_cuda(device) and torch.cuda.is_available()
    if use_nccl:
        torch.cuda.set_device(local_device(device))
    # env:// reads MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE, as torchrun sets them
    dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _group_ready() -> bool:
    """Whether collectives must communicate: initialise the group if the environment asks."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return init_from_env()[1] > 1


def rank() -> int:
    """This process's rank (0 in a single process; ``RANK`` before the group exists)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0) if _env_int("WORLD_SIZE", 1) > 1 else 0


def world_size() -> int:
    """Number of processes (1 in a single process; ``WORLD_SIZE`` before the group exists)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return max(_env_int("WORLD_SIZE", 1), 1)


def is_main() -> bool:
    """Whether this is rank 0: the process that writes files and claims jobs."""
    return rank() == 0


def is_distributed() -> bool:
    """Whether more than one process takes part."""
    return world_size() > 1


def barrier() -> None:
    """Wait until every process gets here (nothing in a single process)."""
    if _group_ready():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Return rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process).

    Parameters
    ----------
    obj : picklable
        The value on ``src``; what other ranks pass is ignored (``None`` is customary).
    src : int
        The rank whose value is sent.

    Returns
    -------
    object
        ``src``'s value, unpickled on every other rank (a copy, not the same object).
    """
    if not _group_ready():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values (nothing in a single process).

    Parameters
    ----------
    tensors : iterable of torch.Tensor
        The same tensors, in the same order, on every rank (e.g. a module's parameters).
    src : int
    """
    if not _group_ready():
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=src)


def all_gather_object(obj: Any) -> list[Any]:
    """Return every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not _group_ready():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _comm_device() -> torch.device:
    """Where small tensors must live to be communicated: NCCL moves CUDA tensors only."""
    if dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on some rank (``flag`` in a single process).

    Lets every rank take a branch together when one rank alone has a reason to (a non-finite
    loss), instead of the others waiting for it in a collective.
    """
    if not _group_ready():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_reduce(t: torch.Tensor, op: str = "mean") -> torch.Tensor:
    """Return the sum or the mean of ``t`` over the ranks (not differentiable).

    Parameters
    ----------
    t : torch.Tensor
        Same shape and dtype on every rank (on the GPU under NCCL).
    op : {"mean", "sum"}

    Returns
    -------
    torch.Tensor
        A new tensor (a detached copy of ``t`` in a single process).
    """
    if op not in ("mean", "sum"):
        raise ValueError(f"op must be 'mean' or 'sum'; got {op!r}")
    t = t.detach().clone()
    if _group_ready():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        if op == "mean":
            t /= dist.get_world_size()
    return t


def gather_batch(t: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Concatenate every rank's ``t`` along dim 0, in rank order, keeping the local gradient.

    Parameters
    ----------
    t : torch.Tensor
        ``(n_r, ...)``: this rank's slice of the batch. The trailing dimensions, dtype and
        device must agree across ranks.
    sizes : sequence of int, optional
        ``n_r`` of every rank, when the caller knows them (the trainer does: it split the
        batch); otherwise they are gathered first (one more small collective). Unequal sizes
        are padded for the transfer and cut back.

    Returns
    -------
    torch.Tensor
        ``(sum_r n_r, ...)``; ``t`` itself in a single process. Differentiable w.r.t. ``t``
        (through ``torch.distributed.nn.functional.all_gather``): the other ranks' rows are
        constants here, and the gradient that reaches them on their own rank is sent back there.

    Notes
    -----
    Why the gradient comes out right, with W ranks and DistributedDataParallel (DDP): every
    rank computes the *same* global regularizer ``R`` from the gathered tensor, so each holds
    the same ``dR/dG`` for the gathered ``G``. The backward of the all-gather sends rank r's
    rows of ``dR/dG`` from every rank back to rank r and sums them: rank r gets
    ``W * dR/dG[rows of r]`` for its own slice, and so ``W`` times its share of ``dR/dtheta``.
    DDP then *averages* the parameters' gradients over the W ranks:
    ``(1/W) * sum_r W * dR/dtheta|_r = dR/dtheta``, the gradient one process computes on the
    global batch. The same averaging turns the ranks' local cross-entropy means into the global
    mean when the slices have equal sizes.
    """
    if not _group_ready():
        return t
    from torch.distributed.nn.functional import all_gather  # autograd-aware collectives

    world = dist.get_world_size()
    if sizes is None:
        n = torch.tensor([t.shape[0]], device=t.device)
        ns = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(ns, n)
        sizes = [int(v) for v in ns]
    sizes = [int(s) for s in sizes]
    if len(sizes) != world or sizes[dist.get_rank()] != t.shape[0]:
        raise ValueError(
            f"gather_batch: sizes {sizes} do not fit {world} ranks with "
            f"{t.shape[0]} rows on rank {dist.get_rank()}"
        )
    top = max(sizes)
    padded = t
    if t.shape[0] < top:  # all_gather moves equal shapes: pad with zero rows, cut them below
        padded = F.pad(t, [0, 0] * (t.dim() - 1) + [0, top - t.shape[0]])
    if t.requires_grad and torch.is_grad_enabled():
        parts = all_gather(padded.contiguous())
    else:  # constants (teacher outputs, labels): the plain collective, no autograd node
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)], dim=0)
