"""Epoch checkpoints on disk: written atomically and never through a link
(:mod:`harness.training.safe_io`), each with a proof beside it (``<path>.proof``, an HMAC under
the user's secret, :mod:`harness.training.proof`) vouching for its file name, size and SHA-256;
read back only once that proof verifies, and then with ``torch.load(weights_only=True)``.
Also what a checkpoint holds besides the weights: every RNG's state, and the config it was
written with (:func:`checkpoint_problem`: may a run of this config resume it?).
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Mapping

import numpy as np
import torch

from harness.training import distributed, proof, safe_io
from harness.training.config import KEYED_WHEN_SET, TrainConfig

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "save_atomic",
    "remove_checkpoint",
    "move_aside",
    "proof_path",
    "rng_state",
    "set_rng_state",
    "checkpoint_problem",
    "check_resumable",
    "read_resumable",
    "checkpoint_payload",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, truncated, foreign or unsafe."""


def proof_path(path: str | os.PathLike) -> str:
    """The proof beside checkpoint ``path`` (``<path>.proof``): the HMAC that says this
    project wrote it (:mod:`harness.training.proof`)."""
    return f"{os.fspath(path)}.proof"


def _version(data) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": proof.sha256_hex(data)}


def _signed_versions(path) -> list[dict[str, Any]]:
    """The checkpoint versions (size, SHA-256) that ``path``'s proof vouches for: the latest
    and the one before it (a process killed between writing the checkpoint and its proof leaves
    either), or none when there is no proof that verifies."""
    try:
        meta = json.loads(safe_io.read_bytes(proof_path(path), limit=4096))
        payload = {"name": os.path.basename(os.fspath(path)), "versions": meta["versions"]}
        ok = proof.verify("checkpoint", payload, meta["proof"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    versions = payload["versions"]
    return (
        versions
        if ok
        and isinstance(versions, list)
        and all(isinstance(v, dict) and isinstance(v.get("bytes"), int) for v in versions)
        else []
    )


def _proven_bytes(path) -> bytes:
    """The bytes of checkpoint ``path`` once its proof verifies (``<path>.proof``: an HMAC of
    its file name, size and SHA-256), else :class:`CheckpointError` (a file planted, damaged,
    renamed from another job's, or signed under another user's secret)."""
    shown = os.fspath(path)
    versions = _signed_versions(path)
    if not versions:
        raise CheckpointError(
            f"checkpoint {shown} is not a checkpoint otransfer wrote here "
            "(no proof beside it that verifies: planted, another job's, or "
            f"signed under another user's secret {proof.secret_path()})"
        )
    try:
        data = safe_io.read_bytes(path, limit=max(v["bytes"] for v in versions))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {shown} is not a readable checkpoint "
            f"({type(exc).__name__}: {str(exc)[:160]})"
        ) from None
    if _version(data) not in versions:
        raise CheckpointError(
            f"checkpoint {shown} is not the one otransfer wrote here (its "
            "size or SHA-256 differs from its proof's: damaged or replaced)"
        )
    return data


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The checkpoint at ``path``, once its proof (``<path>.proof``) verifies, loaded with
    ``weights_only=True``: tensors and plain data only, so a crafted file cannot run code.
    Anything else — no proof, empty, truncated, not a checkpoint, a pickle of objects, a FIFO —
    raises :class:`CheckpointError` naming the file."""
    import io

    need = ("model", "optimizer", "scheduler", "epoch", "step", "config", "history")
    data = _proven_bytes(path)
    try:
        ckpt = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as exc:  # EOFError, UnpicklingError, RuntimeError (zip), OSError ...
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(
            f"checkpoint {os.fspath(path)} is not a readable checkpoint "
            f"({type(exc).__name__}: {first})"
        ) from None
    lacks = [k for k in need if not isinstance(ckpt, dict) or k not in ckpt]
    if lacks:
        raise CheckpointError(
            f"checkpoint {os.fspath(path)} is not a training checkpoint (it lacks {lacks})"
        )
    return ckpt


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Remove checkpoint ``path`` and its proof (a link is removed, never followed; a folder
    planted there is left, for the write that meets it to name)."""
    for p in (os.fspath(path), proof_path(path)):
        try:
            os.unlink(p)
        except OSError:
            pass


def move_aside(path, bad: str) -> None:
    """Move a checkpoint that cannot be resumed to ``bad`` for a look (removed when that
    fails, e.g. a folder planted there), and drop its proof."""
    try:
        os.replace(path, bad)
    except OSError:
        remove_checkpoint(path)
    try:
        os.unlink(proof_path(path))
    except FileNotFoundError:
        pass


_UNSIGNED_WARNED: set[str] = set()


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` to ``path`` through :func:`harness.training.safe_io.atomic_writer` (a
    temporary file, ``fsync``, ``os.replace``: a crash mid-write leaves the previous checkpoint
    intact, a link planted there is never written through, a full disk is one line and leaves
    no temporary file), then its proof beside it."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getbuffer()
    # the proof first, vouching for this version and the one on disk now: a kill between the
    # two writes leaves a checkpoint that its proof vouches for, whichever it is
    versions = [_version(data), *_signed_versions(path)[:2]]
    payload = {"name": os.path.basename(os.fspath(path)), "versions": versions}
    try:
        tag = proof.sign("checkpoint", payload)
    except proof.ProofError as exc:  # no secret: the checkpoint cannot be resumed from
        if str(exc) not in _UNSIGNED_WARNED:
            import warnings

            _UNSIGNED_WARNED.add(str(exc))
            warnings.warn(
                f"{exc}; checkpoints are written without a proof and cannot be resumed from",
                stacklevel=3,
            )
    else:
        safe_io.write_text(proof_path(path), json.dumps({"versions": versions, "proof": tag}))
    safe_io.write_bytes(path, data)


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain data, so that a checkpoint loads with
    ``torch.load(weights_only=True)`` (no pickled objects: a results directory cannot run code)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [
            str(kind),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    """``random.setstate`` wants the nested tuples ``random.getstate`` gave."""
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def checkpoint_problem(path: str | os.PathLike, config: TrainConfig) -> str | None:
    """Why checkpoint ``path`` cannot be resumed by a run of ``config`` (not ours, unreadable,
    written with another config), or None when it can (or there is none)."""
    if not os.path.lexists(path):
        return None
    try:
        check_resumable(load_checkpoint(path)["config"], config, path)
    except (CheckpointError, ValueError) as exc:
        return str(exc)
    return None


# settings that may change between a run and its resumption without changing its trajectory
# (``epochs`` may grow, except under the cosine schedule, whose rates depend on it)
_RESUMABLE_CHANGES = {"epochs", "eval_every", "checkpoint_every", "log_every", "device"}


def check_resumable(saved: Mapping[str, Any], cfg: TrainConfig, path) -> None:
    # a field missing from either side is at its default (older checkpoints, to_dict)
    saved = {**KEYED_WHEN_SET, **saved}
    now = {**KEYED_WHEN_SET, **cfg.to_dict()}
    free = _RESUMABLE_CHANGES - ({"epochs"} if cfg.schedule == "cosine" else set())
    diff = {k: (saved.get(k), now[k]) for k in now if k not in free and saved.get(k) != now[k]}
    if diff:
        raise ValueError(
            f"checkpoint {path} was written with another config "
            f"({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items())}); "
            f"remove it or use a fresh path"
        )


def read_resumable(path, device, cfg: TrainConfig, rank: int) -> dict[str, Any] | None:
    """The checkpoint a run of ``cfg`` resumes from, or None: none at ``path``, or an unreadable
    one (moved aside to ``<path>.bad`` with a warning: the run starts from scratch). A
    checkpoint written with another config raises ``ValueError``."""
    resuming = path is not None and os.path.lexists(path)
    if distributed.broadcast_object(resuming) != resuming:  # rank 0 writes it
        raise RuntimeError(
            f"checkpoint {path}: rank 0 and rank {rank} disagree "
            f"on whether it exists; multi-process runs need a shared file "
            f"system"
        )
    if not resuming:
        return None
    try:
        ckpt = load_checkpoint(path, device)
    except CheckpointError as exc:  # restart from scratch; keep the file for a look
        import warnings

        bad = f"{os.fspath(path)}.bad"
        if rank == 0:
            move_aside(path, bad)
        warnings.warn(f"{exc}; moved to {bad}, training from scratch", stacklevel=4)
        return None
    check_resumable(ckpt["config"], cfg, path)
    return ckpt


def checkpoint_payload(
    *,
    model,
    reg,
    opt,
    sched,
    epoch: int,
    step: int,
    best,
    rng_ranks: list,
    cfg: TrainConfig,
    history: Mapping[str, Any],
) -> dict[str, Any]:
    """What a checkpoint holds after ``epoch`` (0-based): every state a resumed run needs, each
    rank's RNG state, the config and the history so far."""
    return {
        "model": model.state_dict(),
        "regularizer": reg.state_dict() if reg is not None else None,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": epoch + 1,
        "step": step,
        "best_val_accuracy": best,
        "rng": rng_ranks[0],
        "config": cfg.to_dict(),
        **({"rng_ranks": rng_ranks} if len(rng_ranks) > 1 else {}),
        "history": {"epochs": history["epochs"], "steps": dict(history["steps"])},
    }
