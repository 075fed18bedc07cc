"""Epoch checkpoints on disk (issue 12, issue 20): written atomically and never through a link
(:mod:`harness.training.safe_io`), each with a proof beside it (``<path>.proof``, an HMAC under
the user's secret, :mod:`harness.training.proof`) vouching for its file name, size and SHA-256;
read back only once that proof verifies, and then with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from harness.training import proof, safe_io

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "save_atomic",
    "remove_checkpoint",
    "move_aside",
    "proof_path",
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
