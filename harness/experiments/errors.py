"""Errors of the machine or of the input, as the command line shows them: one line naming the
problem and its fix, never a traceback (``--debug`` or ``OTRANSFER_DEBUG=1`` shows it too).

An exception that is none of these (a bug) keeps its traceback. Every line, and every
traceback shown, goes through :func:`harness.experiments.secrets.scrub`: no secret of the
storage URL in either.
"""

from __future__ import annotations

import errno
import os
import tempfile
import traceback
from pathlib import Path

from harness.experiments.secrets import scrub

__all__ = ["one_line", "check_results_root", "scrubbed_traceback", "interrupted"]

#: errno -> what it means for a folder or file of the run, and what to do
_MACHINE = {
    errno.ENOSPC: "the disk is full: free some space, then `otransfer resume` (finished "
    "records are kept)",
    errno.EDQUOT: "the disk quota is used up: free some space, then `otransfer resume` "
    "(finished records are kept)",
    errno.EACCES: "not writable by this user: give a folder you may write to",
    errno.EPERM: "not permitted: give a folder you may write to",
    errno.EROFS: "a read-only file system: give a writable folder",
    errno.ENOTDIR: "a file stands where a folder is expected",
    errno.EISDIR: "a folder stands where a file is expected",
    errno.EEXIST: "something else exists there already (a file where a folder is expected?)",
    errno.ELOOP: "a symbolic link loop",
    errno.ENAMETOOLONG: "the path is too long",
    errno.EMFILE: "too many open files (raise `ulimit -n`)",
}


def one_line(exc: BaseException) -> str | None:
    """The one line for ``exc`` when it is an error of the machine or the input (a full disk,
    a read-only or looping folder, a storage that cannot be used); None for anything else,
    which keeps its traceback."""
    from harness.experiments.records import StorageError

    if isinstance(exc, StorageError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _MACHINE:
        where = exc.filename if exc.filename is not None else ""
        return f"{where}: {exc.strerror or os.strerror(exc.errno)}: {_MACHINE[exc.errno]}"
    return None


def check_results_root(path, write: bool = True) -> Path:
    """``path`` as a results root: raise ValueError (one line) when it is a file, a symbolic
    link loop, or (``write``) a folder that cannot be created or written to."""
    root = Path(path)
    try:
        st = os.stat(root)  # follows links: a loop raises ELOOP
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ValueError(f"--results {str(root)!r}: {_reason(exc)}") from None
    if st is not None and not os.path.isdir(root):
        raise ValueError(
            f"--results {str(root)!r} is a file, not a folder: give a folder "
            "(it is created when missing)"
        )
    if write:
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=root):
                pass
        except OSError as exc:
            raise ValueError(
                f"--results {str(root)!r} cannot be written to: {_reason(exc)}"
            ) from None
    return root


def _reason(exc: OSError) -> str:
    what = exc.strerror or type(exc).__name__
    return f"{what}: {_MACHINE[exc.errno]}" if exc.errno in _MACHINE else what


def scrubbed_traceback(exc: BaseException, *urls) -> str:
    """``exc``'s traceback as text, without the secrets of ``urls`` (``--debug``)."""
    return scrub("".join(traceback.format_exception(exc)), *urls)


def interrupted(args) -> str:
    """What a Ctrl-C of ``otransfer COMMAND`` (its parsed ``args``) leaves, in one line: what
    is kept and, for run / resume / worker, the command that goes on."""
    import shlex

    from harness.experiments.secrets import redact

    if args.command not in ("run", "resume", "worker") or not hasattr(args, "finished"):
        return "interrupted (Ctrl-C)" + (
            "; the study keeps its finished trials" if args.command == "tune" else ""
        )
    again = ["otransfer", "resume", args.suite, "--results", str(args.results)]
    for kv in args.set or ():
        again += ["--set", kv]
    again += ["--quick"] if args.quick else []
    done = (
        "the workers' finished jobs are recorded"
        if args.workers > 1
        else f"{args.finished} job(s) finished and recorded in this run"
    )
    where = f" in {redact(args.storage)}" if args.storage else ""
    same = " with the same --storage" if args.storage and not args.storage_from_env else ""
    return (
        f"interrupted (Ctrl-C): {done}{where}; the job that was running is recorded as "
        f"interrupted and resumes from its last epoch checkpoint: `{shlex.join(again)}`"
        f"{same} runs the rest"
    )
