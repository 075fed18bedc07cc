"""What a run keeps in ``<results>/<suite>/artefacts/`` and reads back (issue 20): a teacher's
weights ``<key>.pt``, a finished job's result ``<key>.result.json`` until the storage records it,
and epoch checkpoints ``<key>.ckpt`` (:mod:`harness.training.checkpoints`).

Nothing read back is trusted on its own: a result carries an HMAC proof over the job's key, its
config's hash, the code version and the metrics (:mod:`harness.training.proof`), and its metrics
are checked as a record's; a teacher's weights are loaded only when their size and SHA-256 match
those its completed record keeps; a checkpoint only when its proof verifies and its config is
this job's. Anything else is ignored with a line, and the job trained; writes go through
:mod:`harness.training.safe_io`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from harness.experiments.suite import Job

__all__ = [
    "save_pending",
    "load_pending",
    "pending_payload",
    "save_state",
    "load_artefact",
    "check_checkpoint",
    "remove_stale_tmp",
    "unlink",
    "PENDING_LIMIT",
]


#: a pending result larger than this is not ours (a job's metrics and per-epoch logs are KBs)
PENDING_LIMIT = 16 * 2**20


def pending_payload(job: Job, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What a pending result's proof signs: the job's key, its config's SHA-256, the code
    version and the metrics."""
    from harness.experiments.records import git_sha, jsonable
    from harness.training.proof import sha256_hex

    return {
        "key": job.key,
        "config_sha256": sha256_hex(job.config_json().encode()),
        "code": git_sha(),
        "metrics": {k: jsonable(v) for k, v in metrics.items()},
    }


def save_pending(path: Path, job: Job, metrics, root=None) -> str | None:
    """A finished job's metrics beside its checkpoint until the storage records them: a worker
    stopped by a storage outage loses no training (the next run records it from this file).
    The file carries an HMAC proof (:mod:`harness.training.proof`). Returns why it could not
    be kept (no secret, a full disk ...), or None: the result is recorded all the same."""
    import json

    from harness.training import proof, safe_io

    payload = pending_payload(job, metrics)
    try:
        tag = proof.sign("result", payload)
        safe_io.write_text(path, json.dumps({**payload, "proof": tag}), root)
    except (OSError, ValueError) as exc:
        return f"results are not kept beside their checkpoints until recorded ({exc})"
    return None


def load_pending(path: Path, job: Job) -> tuple[dict | None, str | None]:
    """``(metrics, None)`` from the file :func:`save_pending` left for ``job``, once its proof
    verifies and its metrics are a record's; ``(None, why)`` when a file is there but is not
    this project's result for this job (removed: the job is trained); ``(None, None)`` when
    there is none."""
    import json

    from harness.experiments.records import check_metrics
    from harness.training import proof, safe_io

    if not os.path.lexists(path):
        return None, None
    try:
        kept = json.loads(safe_io.read_bytes(path, limit=PENDING_LIMIT))
        fields = ("key", "config_sha256", "code", "metrics", "proof")
        if not isinstance(kept, dict) or any(k not in kept for k in fields):
            raise ValueError("it carries no proof that otransfer wrote it")
        payload = {k: kept[k] for k in fields[:-1]}
        why = (
            None
            if proof.verify("result", payload, kept["proof"])
            else "its proof does not verify (planted, damaged, or another job's, code version's "
            "or user's)"
        )
        if why is None and proof.canonical(payload) != proof.canonical(
            pending_payload(job, payload["metrics"])
        ):  # (as JSON: NaN == NaN there)
            why = "it is another job's or another code version's"
        why = why or check_metrics(payload["metrics"])
    except (OSError, ValueError, TypeError) as exc:  # not JSON, a FIFO, huge, no proof
        why = (
            str(exc)[:160]
            if isinstance(exc, ValueError)
            else f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
        )
    if why is None:
        return dict(payload["metrics"]), None
    unlink(path)
    return None, f"ignored {path} ({why}); training the job"


def unlink(path: Path) -> None:
    """Remove ``path`` (a link itself, never its target); a folder there is left."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def remove_stale_tmp(path: Path) -> None:
    """Delete ``<path>.tmp.<pid>`` files that a killed writer left behind (its process is gone;
    a live writer's file is left alone)."""
    from harness.experiments.claims import pid_alive

    for tmp in path.parent.glob(f"{path.name}.tmp.*"):
        pid = tmp.name.rsplit(".", 1)[-1]
        if pid.isdigit() and pid_alive(int(pid)):  # claims.py's liveness test
            continue
        unlink(tmp)


def save_state(model, path: Path, root=None) -> dict[str, Any]:
    """Write the model's ``state_dict`` to ``path`` (atomically, never through a link) and
    return what its record keeps to verify it later: its path, size and SHA-256."""
    import io

    import torch

    from harness.training import proof, safe_io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    data = buf.getbuffer()
    safe_io.write_bytes(path, data, root)
    return {
        "artefact": os.path.abspath(path),
        "artefact_bytes": len(data),
        "artefact_sha256": proof.sha256_hex(data),
    }


def load_artefact(artefacts: Path, key: str, role: str, record: Mapping[str, Any] | None):
    """The ``state_dict`` of job ``key``'s weights, from ``artefacts/<key>.pt`` or else the
    path its record names, once the file's size and SHA-256 match those the storage recorded
    with the job (``record``: its ``artefact*`` attributes). A file planted for a job not
    recorded done, or one that does not match, is never loaded: one line says what to do."""
    import io

    import torch

    from harness.training import proof

    if record is None:
        raise FileNotFoundError(
            f"{role} job {key} is not recorded done: its weights cannot be used"
        )
    want, size = record.get("artefact_sha256"), record.get("artefact_bytes")
    if not want:
        raise FileNotFoundError(
            f"{role} job {key} is recorded done without a digest of its weights (recorded by an "
            "older otransfer, or when it was no teacher): they cannot be verified; run the "
            "suite on a fresh storage (--storage) to train it again"
        )
    recorded = record.get("artefact")
    missing, wrong = [], []
    for path in dict.fromkeys([str(artefacts / f"{key}.pt"), *([recorded] if recorded else [])]):
        data = _readload_artefact(path, size)
        if data is None:
            missing.append(path)
        elif isinstance(data, str) or proof.sha256_hex(data) != want:
            wrong.append(f"{path}{f' ({data})' if isinstance(data, str) else ''}")
        else:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if wrong:
        raise FileNotFoundError(
            f"{role} job {key}'s weights {'; '.join(wrong)} do not match the size and SHA-256 "
            "recorded with the job (replaced, damaged or planted): not loaded; restore them, "
            f"or point --results at the folder holding the recorded ones ({recorded})"
        )
    raise FileNotFoundError(
        f"{role} job {key} is recorded done but its weights are not at {' nor '.join(missing)}: "
        "point --results at the folder that holds them, or share that folder with this "
        "worker (the job is not trained twice)"
    )


def _readload_artefact(path: str, size) -> bytes | str | None:
    """The bytes of weights file ``path`` when it is a regular file of ``size`` bytes; None
    when it is missing; else why not (a FIFO, a device, another size)."""
    from harness.training import safe_io

    try:
        st = os.stat(path)
        if size is not None and st.st_size != int(size) and os.path.isfile(path):
            return f"{st.st_size} bytes, not {int(size)}"
        return safe_io.read_bytes(path, limit=int(size) if size is not None else None)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)


def check_checkpoint(ckpt: Path, config, say) -> None:
    """Before a job trains: stale temporary files of ``ckpt`` removed, and a checkpoint that
    is not this project's for this job (no proof, planted, another config's) set aside with a
    line (``say``, else a warning): the job trains from scratch."""
    from harness.training.checkpoints import move_aside, proof_path, remove_checkpoint
    from harness.training.loop import checkpoint_problem

    remove_stale_tmp(ckpt)
    remove_stale_tmp(Path(proof_path(ckpt)))
    if not os.path.lexists(ckpt):
        remove_checkpoint(ckpt)  # a proof without its checkpoint (or planted) goes too
        return
    problem = checkpoint_problem(ckpt, config)
    if problem is None:
        return
    move_aside(ckpt, f"{ckpt}.bad")
    msg = f"{problem}; moved to {ckpt.name}.bad, training from scratch"
    if say is not None:
        say(msg)
    else:
        import warnings

        warnings.warn(msg, stacklevel=3)
