"""The files the harness writes under a results folder, and reads back from it.

Every write goes through :func:`atomic_writer` (or :func:`write_bytes`, :func:`write_text`,
:func:`write_figure`): the folders on the way are walked from the root with ``O_NOFOLLOW``
(a symbolic link is followed only when its real path stays inside the root; one that leads out
is refused with :class:`UnsafePathError` naming it), the data go to ``<name>.tmp.<pid>`` beside
the file, are flushed to the disk (``fsync``) and renamed over the file (``os.replace``,
atomic on POSIX; a link, a FIFO or a hard link planted where the file goes is replaced, never
written through). A full disk (``ENOSPC``, ``EDQUOT``) raises :class:`DiskFullError` naming the
path, and the temporary file is removed whatever went wrong.

Reads (:func:`read_bytes`) take regular files only (never a FIFO, a device or a folder, which
could block or never end) up to a size limit. What they return is not yet trusted: callers
check it against a digest the storage recorded or a proof (:mod:`harness.training.proof`).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import os
import stat
from pathlib import Path
from typing import IO, Iterator, NamedTuple

__all__ = [
    "UnsafePathError",
    "DiskFullError",
    "is_disk_full",
    "ensure_dir",
    "atomic_writer",
    "write_bytes",
    "write_text",
    "write_figure",
    "open_append",
    "read_bytes",
    "check_target",
    "check_write",
    "confine",
]

#: errno values of a disk (or a quota) that is full
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_TEXT = (
    "No space left on device",
    "database or disk is full",
    "Disk quota exceeded",
    "could not extend file",
)


class UnsafePathError(ValueError):
    """A write (or read) that would leave its root through a link, or meets a folder, a FIFO or
    a device where a file belongs."""


class DiskFullError(OSError, ValueError):
    """The disk (or the user's quota) is full: one line naming the path."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: SQLAlchemy's ``orig``, a ``__cause__``) is a full
    disk or quota."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in FULL:
            return True
        if any(t in str(exc) for t in _FULL_TEXT):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__
        seen += 1
    return False


def disk_full(path, exc: BaseException | None = None) -> DiskFullError:
    """The one-line :class:`DiskFullError` of a write to ``path``."""
    code = exc.errno if isinstance(exc, OSError) and exc.errno in FULL else errno.ENOSPC
    return DiskFullError(
        code,
        f"disk full writing {os.fspath(path)} ({os.strerror(code)}): "
        "free some space (or raise the quota), then run again; finished "
        "records are kept",
    )


def _inside(path: str, root: str) -> bool:
    return path == root or os.path.commonpath([path, root]) == root


def _root(root) -> str:
    """The real path of ``root`` (created when missing): the user named it, so a link there
    is followed; a file, a loop or a folder that cannot be made is one line."""
    shown = os.fspath(root)
    try:
        os.makedirs(shown, exist_ok=True)
    except FileExistsError:
        what = (
            "a symbolic link that leads nowhere (a loop, or a missing target)"
            if os.path.islink(shown)
            else "a file, not a folder"
        )
        raise UnsafePathError(
            f"results folder {shown} is {what}: give --results a folder (it "
            "is created when missing)"
        ) from None
    except OSError as exc:
        if exc.errno in FULL:
            raise disk_full(shown, exc) from None
        why = "a loop of symbolic links" if exc.errno == errno.ELOOP else exc.strerror
        raise UnsafePathError(
            f"results folder {shown} cannot be made ({why}): give --results a folder you can write"
        ) from None
    real = os.path.realpath(shown)
    if not os.path.isdir(real):
        raise UnsafePathError(f"results folder {shown} is not a folder: give --results a folder")
    return real


def _link_out(root: str, real_root: str, parts: list[str]) -> tuple[str, str] | None:
    """The first symbolic link under ``root`` along ``parts`` whose target leaves it, and its
    target (for the message)."""
    here = root
    for part in parts:
        here = os.path.join(here, part)
        if os.path.islink(here):
            target = os.path.realpath(here)
            if not _inside(target, real_root):
                return here, target
    return None


#: the results folder that writes given no root stay inside (:func:`confine`)
_CONFINED: contextvars.ContextVar[str | None] = contextvars.ContextVar("confined", default=None)


@contextlib.contextmanager
def confine(root) -> Iterator[None]:
    """Within the block, a write given no ``root`` whose path lies under ``root`` stays inside
    it, as if given it (the training loop writes its checkpoints knowing no results folder:
    ``artefacts/`` swapped for a link mid-run redirects none)."""
    token = _CONFINED.set(os.path.abspath(os.fspath(root)))
    try:
        yield
    finally:
        _CONFINED.reset(token)


def _split(path, root) -> tuple[str, str, list[str]]:
    """``(shown root, real root, parts of path below the root)``; ``root`` None: the folder
    :func:`confine` set when the path lies under it, else the path's own folder."""
    path = os.path.abspath(os.fspath(path))
    if (
        root is None
        and _CONFINED.get() is not None
        and os.path.commonpath([path, _CONFINED.get()]) == _CONFINED.get()
    ):
        root = _CONFINED.get()
    root = os.path.abspath(os.fspath(root)) if root is not None else os.path.dirname(path)
    rel = os.path.relpath(path, root)
    if rel == os.curdir:
        return root, _root(root), []
    if rel.startswith(os.pardir + os.sep) or rel == os.pardir:
        raise UnsafePathError(f"{path} is outside its results folder {root}")
    return root, _root(root), rel.split(os.sep)


def _refuse_link(link: str, target: str, root: str):
    return UnsafePathError(
        f"{link} is a symbolic link to {target}, outside the results folder "
        f"{root}: writes never leave it; remove the link (or give --results "
        "the folder you mean)"
    )


class _Target(NamedTuple):
    fd: int  # the folder that holds the file, opened without following a link
    name: str  # the file's name in it
    shown: str  # the file's path, as the caller gave it
    real_root: str
    root: str  # the root, as the caller gave it

    def check(self) -> None:
        """The entry a write replaces: a folder is refused; a link leaving the root is refused
        (naming it); anything else (file, link inside, FIFO, socket) is replaced, never
        opened."""
        try:
            st = os.stat(self.name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{self.shown} is a folder where a file is expected: remove it")
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(self.shown)
            if not _inside(target, self.real_root):
                raise _refuse_link(self.shown, target, self.root)


def _open_dir(path, root) -> _Target:
    """The folder that holds ``path`` (made when missing), walked from the root with
    ``O_NOFOLLOW`` along its real path inside the root."""
    shown_root, real_root, parts = _split(path, root)
    name, folders = parts[-1], parts[:-1]
    out = _link_out(shown_root, real_root, folders)
    if out:
        raise _refuse_link(*out, shown_root)
    real_parent = os.path.realpath(os.path.join(real_root, *folders))
    fd = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY)
    here = real_root
    try:
        for part in os.path.relpath(real_parent, real_root).split(os.sep):
            if part == os.curdir:
                continue
            here = os.path.join(here, part)
            fd = _step(fd, part, here)
    except BaseException:
        os.close(fd)
        raise
    return _Target(fd, name, os.path.join(shown_root, *parts), real_root, shown_root)


def _step(fd: int, part: str, shown: str) -> int:
    """The folder ``part`` of ``fd`` (made when missing), opened without following a link."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        try:
            new = os.open(part, flags, dir_fd=fd)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            new = os.open(part, flags, dir_fd=fd)
    except OSError as exc:
        if exc.errno in FULL:
            raise disk_full(shown, exc) from None
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(
                f"{shown} is not a folder (a file where a folder belongs, or a "
                "link put there while writing): remove it"
            ) from None
        raise
    os.close(fd)
    return new


def ensure_dir(path, root=None) -> Path:
    """Make folder ``path`` under ``root`` (checked as a write would be); return it."""
    os.close(_open_dir(os.path.join(os.fspath(path), "_"), root).fd)  # its folders, made
    return Path(path)


def check_write(path, root=None) -> Path:
    """Raise what a write of ``path`` would (a link out of ``root``, a folder there) without
    writing: a report checks all its files before it writes the first."""
    t = _open_dir(path, root)
    try:
        t.check()
    finally:
        os.close(t.fd)
    return Path(path)


@contextlib.contextmanager
def atomic_writer(path, root=None, mode: str = "wb") -> Iterator[IO]:
    """A file object whose content replaces ``path`` atomically when the block ends without
    an error (``fsync``, then ``os.replace``); on an error the temporary file is removed and
    the file left as it was. ``root``: the folder the write must stay inside (default: the
    path's own folder). A full disk raises :class:`DiskFullError`."""
    t = _open_dir(path, root)
    fd, name, shown = t.fd, t.name, t.shown
    tmp = f"{name}.tmp.{os.getpid()}"
    try:
        t.check()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)  # a dead writer's, whose pid this process reuses
        try:
            raw = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=fd
            )
        except OSError as exc:
            raise disk_full(shown, exc) if exc.errno in FULL else exc from None
        try:
            with open(raw, mode, closefd=True) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                raise disk_full(shown, exc) from None
            raise
        with contextlib.suppress(OSError):
            os.fsync(fd)  # the rename itself on the disk
    finally:
        os.close(fd)


def write_bytes(path, data: bytes, root=None) -> None:
    with atomic_writer(path, root) as fh:
        fh.write(data)


def write_text(path, text: str, root=None) -> None:
    write_bytes(path, text.encode("utf-8"), root)


def write_figure(fig, path, root=None, **savefig) -> None:
    """``fig.savefig(path, **savefig)`` through :func:`atomic_writer` (format from the
    suffix)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    write_bytes(path, buf.getvalue(), root)


def open_append(path, root=None) -> IO:
    """``path`` opened to append text (a log), never through a link: a link there is
    refused, a missing file created."""
    t = _open_dir(path, root)
    fd, name, shown = t.fd, t.name, t.shown
    try:
        t.check()
        raw = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666, dir_fd=fd
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(
                f"{shown} is a symbolic link: logs are never written through one; remove it"
            ) from None
        raise disk_full(shown, exc) if exc.errno in FULL else exc from None
    finally:
        os.close(fd)
    st = os.fstat(raw)
    if not stat.S_ISREG(st.st_mode):
        os.close(raw)
        raise UnsafePathError(f"{shown} is not a regular file: remove it")
    return open(raw, "a", encoding="utf-8", closefd=True)


def read_bytes(path, limit: int | None = None) -> bytes:
    """The content of regular file ``path``, at most ``limit`` bytes. A FIFO, a device or a
    folder (which could block or never end) raises :class:`UnsafePathError`; a larger file
    too; a missing one :class:`FileNotFoundError`."""
    shown = os.fspath(path)
    fd = os.open(shown, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{shown} is not a regular file")
        if limit is not None and st.st_size > limit:
            raise UnsafePathError(f"{shown} is {st.st_size} bytes, more than the {limit} expected")
        with open(fd, "rb", closefd=False) as fh:
            data = fh.read(st.st_size + 1 if limit is None else limit + 1)
    finally:
        os.close(fd)
    if limit is not None and len(data) > limit:
        raise UnsafePathError(f"{shown} grew past {limit} bytes while being read")
    return data


def check_target(path, root=None) -> Path:
    """Check a file that another program writes (SQLite's database and its journals) as
    :func:`atomic_writer` would: its folders stay inside ``root``; it is absent, a regular file
    or a link whose target stays inside the root and is a regular file."""
    t = _open_dir(path, root)
    fd, name, shown = t.fd, t.name, t.shown
    try:
        t.check()
        try:
            st = os.stat(name, dir_fd=fd)
        except FileNotFoundError:
            return Path(path)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(
                f"{shown} is not a regular file (a FIFO, a device or a "
                "socket planted there): remove it"
            )
    finally:
        os.close(fd)
    return Path(path)
