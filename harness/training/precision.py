"""GPU-run options of :class:`~harness.training.config.TrainConfig`.

``precision`` ("fp32" | "bf16"), ``channels_last`` (bool), ``loader_workers`` (int >= 0).
At their defaults they are left out of the job key (``GPU_DEFAULTS`` joins
``config.KEYED_WHEN_SET``) and change nothing. The batched engine refuses jobs that set them
(:func:`gpu_options_set`, called by ``batched.why_not_batchable``).
"""

from __future__ import annotations

from typing import Any

PRECISIONS = ("fp32", "bf16")

#: name -> default; these fields are keyed only when set
GPU_DEFAULTS: dict[str, Any] = {"precision": "fp32", "channels_last": False, "loader_workers": 0}


def check_gpu_options(cfg) -> None:
    """One-line ``ValueError`` naming the bad option and the fix."""
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {cfg.precision!r}")
    if not isinstance(cfg.channels_last, bool):
        raise ValueError(f"channels_last must be true or false; got {cfg.channels_last!r}")
    w = cfg.loader_workers
    if isinstance(w, bool) or not isinstance(w, int) or w < 0:
        raise ValueError(f"loader_workers must be an integer >= 0; got {w!r}")


def gpu_options_set(cfg) -> list[str]:
    """Names of the GPU options ``cfg`` sets to something else than their default."""
    return [k for k, v in GPU_DEFAULTS.items() if getattr(cfg, k) != v]


def loader_kwargs(cfg) -> dict[str, Any]:
    """DataLoader options for ``cfg.loader_workers``: worker processes (persistent across the
    epoch's iterations when > 0), pinned host memory when the device is CUDA. The batch
    order is drawn by the batch sampler in the main process, so it does not depend on them."""
    import torch

    w = cfg.loader_workers
    return {
        "num_workers": w,
        "persistent_workers": w > 0,
        "pin_memory": torch.device(cfg.device).type == "cuda",
    }


def autocast(cfg):
    """``torch.autocast`` to bfloat16 on ``cfg.device``'s type when ``precision: bf16``
    (CPU autocast supports bf16 too), else a context that does nothing."""
    import contextlib

    import torch

    if cfg.precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16)


def f32(t):
    """``t`` upcast to float32 when it is a half type (bf16/fp16), else ``t`` itself: float32
    and float64 (the exactness tests' dtype) pass through unchanged."""
    import torch

    return t.float() if t is not None and t.dtype in (torch.bfloat16, torch.float16) else t


def to_float32(ctx):
    """``ctx`` (a RegContext) with its tapped features and logits in float32: the one boundary
    where the forward's (possibly bf16) outputs enter the regularizer, so that the OT costs and
    plans are never computed in bf16. Identity on float32/float64 inputs."""
    import dataclasses

    return dataclasses.replace(
        ctx,
        features={k: f32(v) for k, v in ctx.features.items()},
        teacher_features={k: f32(v) for k, v in ctx.teacher_features.items()},
        logits=f32(ctx.logits),
        teacher_logits=f32(ctx.teacher_logits),
        source_logits=f32(ctx.source_logits),
    )


def channels_last(cfg, t):
    """``t`` (a module or a batch) in ``torch.channels_last`` when ``cfg.channels_last``. Only
    4-D tensors (conv weights, image batches) change: for an MLP or flat inputs it is a no-op."""
    import torch

    if not cfg.channels_last:
        return t
    if isinstance(t, torch.nn.Module):
        return t.to(memory_format=torch.channels_last)
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
