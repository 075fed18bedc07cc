"""What a person watching a suite sees: one suite-level bar in a terminal, plain
one-line-per-job logs elsewhere.

In a terminal (standard error is a TTY) :class:`SuiteBar` draws one bar for the suite — jobs
done / total, failed, rate and ETA, the current job — and the training loop draws the job's own
bar beneath it (``position=1``, ``leave=False``: it clears when the job ends). Lines that need a
person's eye (a failure, a job taken over from a lost worker) are written above the bars. When
the output is a file or a pipe there are no bars:
:func:`harness.experiments.runner.run_suite` prints one line per job, which is what a log file
and ``grep`` want.

:func:`follow` is the bar of ``otransfer run --workers N`` in a terminal: the workers write
their lines to ``<results>/<suite>/logs/worker-K.log`` and the parent draws one bar from the
storage (the claims table and the records), polled once a second.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Sequence

__all__ = ["SuiteBar", "is_terminal", "follow", "follow_workers"]


def is_terminal(stream=None) -> bool:
    """Whether ``stream`` (default standard error, where tqdm draws) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class SuiteBar:
    """The suite-level bar: ``update(job_label)`` when a job starts, ``finish(ok)`` when it
    ends, ``write(line)`` for a line above the bars."""

    def __init__(self, name: str, total: int, done: int = 0, stream=None, leave: bool = True):
        from tqdm.auto import tqdm

        self.failed = 0
        self._bar = tqdm(
            total=total,
            initial=done,
            desc=name,
            unit="job",
            position=0,
            leave=leave,
            dynamic_ncols=True,
            file=stream or sys.stderr,
            smoothing=0.05,
        )
        self._postfix()

    def _postfix(self, current: str = "") -> None:
        parts = [f"failed {self.failed}"] if self.failed else []
        if current:
            parts.append(current)
        self._bar.set_postfix_str(" · ".join(parts), refresh=True)

    def start(self, label: str) -> None:
        self._postfix(label)

    def finish(self, ok: bool) -> None:
        if not ok:
            self.failed += 1
        self._bar.update(1)
        self._postfix()

    def set(self, done: int, failed: int, current: str = "") -> None:
        """Absolute counts (the multi-worker view reads them from the storage)."""
        self.failed = failed
        self._bar.n = done
        self._postfix(current)

    def write(self, line: str) -> None:
        self._bar.write(line, file=self._bar.fp)

    def close(self) -> None:
        self._bar.close()


def follow(
    name: str,
    total: int,
    read: Callable[[], tuple[int, int, Sequence[str]]],
    alive: Callable[[], bool],
    every: float = 1.0,
    stream=None,
) -> None:
    """Draw one bar for a suite that other processes run, until ``alive()`` is false.

    ``read()`` returns ``(done, failed, running job labels)``; a read that fails (the storage
    being created, a hiccup) keeps the last counts.
    """
    done, failed, running = 0, 0, ()
    try:
        done, failed, running = read()
    except Exception:
        pass
    # not left on screen: when the workers stop, the caller's own pass draws the suite's bar
    bar = SuiteBar(name, total, done=done, stream=stream, leave=False)
    try:
        while alive():
            try:
                done, failed, running = read()
            except Exception:
                pass
            label = "; ".join(running[:3]) + (f" (+{len(running) - 3})" if len(running) > 3 else "")
            bar.set(done, failed, f"running {label}" if running else "")
            time.sleep(every)
        try:
            done, failed, running = read()
        except Exception:
            pass
        bar.set(done, failed)
    finally:
        bar.close()


def follow_workers(suite, storage: str, alive: Callable[[], bool], jobs=None) -> None:
    """The suite bar of ``run --workers N`` in a terminal, read from the claims and records of
    ``storage`` while ``alive()`` (some worker still runs); ``jobs``: those run (``--only``),
    default the suite's."""
    import sqlalchemy as sa

    from harness.experiments.claims import DONE, FAILED, LIVE, TABLE, make_engine
    from harness.experiments.records import done_keys
    from harness.experiments.suite import expand

    jobs = expand(suite) if jobs is None else jobs
    label = {j.key: f"{j.stage} {j.dataset} {j.label or j.regularizer} seed={j.seed}" for j in jobs}
    try:
        before = done_keys(storage, suite.name) & set(label)
    except Exception:
        before = set()
    engine = make_engine(storage)

    def read():
        with engine.connect() as c:
            rows = c.execute(
                sa.text(f"select key, state from {TABLE} where suite = :s"), {"s": suite.name}
            ).all()
        done = set(before) | {k for k, st in rows if st == DONE and k in label}
        failed = sum(st == FAILED and k in label for k, st in rows)
        running = [label[k] for k, st in rows if st in LIVE and k in label]
        return len(done), failed, running

    try:
        follow(suite.name, len(jobs), read, alive)
    finally:
        engine.dispose()
