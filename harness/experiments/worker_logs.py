"""The logs of the workers that ``run --workers N`` starts, and why they failed (issue 24).

Each worker's output goes to ``<results>/<suite>/logs/worker-K.log`` (and, without a
terminal's suite bar, to this process's standard output as well, line by line). When workers
exit with an error, :func:`worker_errors` reads their logs and gives one line per distinct
error: the worker's own one-line error (``otransfer worker: ...``, e.g. a suite or plugin that
cannot be loaded), else the distinct reasons of the jobs it recorded as failed, else its last
line (a traceback's).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Sequence

__all__ = ["start_workers", "worker_errors", "log_paths"]

#: Distinct job-failure reasons kept per worker.
MAX_REASONS = 5


def log_paths(logs: Path, n: int) -> list[Path]:
    return [Path(logs) / f"worker-{i}.log" for i in range(n)]


def _tee(src: IO[str], dst: IO[str]) -> None:
    """Copy ``src`` line by line to ``dst`` and to standard output (the plain lines of the
    workers interleave there, as before); runs in a thread per worker."""
    for line in src:
        dst.write(line)
        dst.flush()
        sys.stdout.write(line)
        sys.stdout.flush()


def start_workers(cmd: Sequence[str], env, files: Sequence[IO[str]], echo: bool):
    """Start one worker per log file in ``files``; with ``echo`` their lines also go to
    standard output. Returns ``wait()``, which waits for them and returns their exit codes."""
    if not echo:
        procs = [
            subprocess.Popen(list(cmd), env=env, stdout=f, stderr=subprocess.STDOUT) for f in files
        ]
        return lambda: [p.wait() for p in procs], procs
    procs, threads = [], []
    for f in files:
        p = subprocess.Popen(
            list(cmd),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            encoding="utf-8",
            errors="replace",
        )
        t = threading.Thread(target=_tee, args=(p.stdout, f), daemon=True)
        t.start()
        procs.append(p)
        threads.append(t)

    def wait() -> list[int]:
        codes = [p.wait() for p in procs]
        for t in threads:
            t.join()
        return codes

    return wait, procs


def _reasons(text: str) -> list[str]:
    """Why one worker failed, from its log: its one-line error, else the distinct reasons of
    its failed jobs (``failed KEY: reason``), else its last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    own = [ln for ln in lines if ln.startswith("otransfer worker:")]
    if own:
        return [own[-1]]
    failed = [ln.split(": ", 1)[1] for ln in lines if ln.startswith("failed ") and ": " in ln]
    if failed:
        return list(dict.fromkeys(failed))[:MAX_REASONS]
    return lines[-1:] or ["no output"]


def worker_errors(paths: Sequence[Path], codes: Sequence[int], scrub=str) -> list[str]:
    """One line per distinct error of the workers whose exit code is not 0, naming them:
    ``workers 0, 1 (exit 1): <error>``; ``scrub`` removes secrets from each line."""
    by_reason: dict[str, list[tuple[int, str]]] = {}
    for i, (path, code) in enumerate(zip(paths, codes, strict=True)):
        if code == 0:
            continue
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            text = f"(its log {path} cannot be read: {exc.strerror or exc})"
        what = f"exit {code}" if code > 0 else f"signal {-code}"
        for reason in _reasons(text):
            by_reason.setdefault(scrub(reason), []).append((i, what))
    return [f"{_who(ws)}: {reason}" for reason, ws in by_reason.items()]


def _who(workers: list[tuple[int, str]]) -> str:
    """``workers 0, 1 (exit 1)``, or each worker with its own code when they differ."""
    plural = "s" if len(workers) > 1 else ""
    if len({what for _, what in workers}) == 1:
        return f"worker{plural} {', '.join(str(i) for i, _ in workers)} ({workers[0][1]})"
    return f"worker{plural} " + ", ".join(f"{i} ({what})" for i, what in workers)
