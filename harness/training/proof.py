"""Proofs that a file read back from a results folder is this project's own output.

A results folder may be shared, copied or written by someone else; a checksum stored beside a
file proves nothing, since whoever plants the file can compute it too. What is written to be
read back (an epoch checkpoint, a result kept through a storage outage) carries an HMAC-SHA256
of what it says (its name or job key, the config, the code version, the content's SHA-256)
under a secret that never lives in the results folder: ``$XDG_CONFIG_HOME/otransfer/secret``
(default ``~/.config/otransfer/secret``), 32 random bytes made on first use, mode 0600, owned
by the user. Whoever can write the results folder but not read that file cannot forge a proof.
Workers on several machines verify each other's files only when they share that file (a
shared home does); otherwise a file is not trusted and its job is trained again, which costs
time, never a wrong record.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

__all__ = ["ProofError", "secret_path", "sign", "verify", "canonical", "sha256_hex"]

_SECRET_BYTES = 32


class ProofError(ValueError):
    """The secret cannot be made or read safely (a read-only home, a secret others can read)."""


def secret_path() -> Path:
    """``$XDG_CONFIG_HOME/otransfer/secret`` (``~/.config`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "otransfer" / "secret"


def canonical(obj: Any) -> bytes:
    """Canonical JSON of ``obj`` (sorted keys, no spaces): what is signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise ProofError(
                f"secret {path} is not a regular file of this user: remove it (a new one is made)"
            )
        if st.st_mode & 0o077:
            raise ProofError(
                f"secret {path} can be read by others (mode "
                f"{stat.S_IMODE(st.st_mode):o}): chmod 600 {path}"
            )
        data = os.read(fd, 4 * _SECRET_BYTES)
    finally:
        os.close(fd)
    key = bytes.fromhex(data.decode("ascii", "replace").strip() or "zz")
    if len(key) < _SECRET_BYTES:
        raise ValueError("short")
    return key


def _make(path: Path) -> None:
    """Write a fresh secret to ``path`` unless one is there (``os.link``: the first of several
    processes starting together wins, the others read its secret)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".secret.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (secrets.token_hex(_SECRET_BYTES) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


@functools.lru_cache(maxsize=4)
def _secret(path: str) -> bytes:
    p = Path(path)
    try:
        return _read(p)
    except FileNotFoundError:
        pass
    except ValueError as exc:
        if isinstance(exc, ProofError):
            raise
        raise ProofError(
            f"secret {p} is not {_SECRET_BYTES} hex bytes: remove it (a new one is made)"
        ) from None
    try:
        _make(p)
        return _read(p)
    except OSError as exc:
        raise ProofError(
            f"secret {p} cannot be made ({exc.strerror}): set XDG_CONFIG_HOME "
            "to a folder you can write, outside the results folder"
        ) from None


def secret() -> bytes:
    """This user's secret (made on first use); :class:`ProofError` when it cannot be had."""
    return _secret(str(secret_path()))


def sign(purpose: str, payload: Any) -> str:
    """The HMAC-SHA256 (hex) of ``payload``'s canonical JSON for ``purpose`` (a checkpoint
    proof cannot pass for a result's)."""
    msg = purpose.encode("utf-8") + b"\0" + canonical(payload)
    return hmac.new(secret(), msg, hashlib.sha256).hexdigest()


def verify(purpose: str, payload: Any, tag: Any) -> bool:
    """Whether ``tag`` is :func:`sign`'s for ``payload`` (False when the secret is away)."""
    if not isinstance(tag, str):
        return False
    try:
        return hmac.compare_digest(sign(purpose, payload), tag)
    except (ProofError, TypeError, ValueError):
        return False
