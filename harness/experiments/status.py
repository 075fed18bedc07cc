"""Where a suite stands in a storage: done / running (by worker) / failed / waiting.

``otransfer status SUITE --storage URL`` reads the records (:mod:`harness.experiments.records`)
and the claims (:mod:`harness.experiments.claims`) of the suite's current expansion; it writes
nothing, so it is safe to call from anywhere, any number of times, while workers run::

    li2020_table4-cpu: 760 jobs: 401 done, 2 running, 0 failed, 357 waiting
      throughput 41.3 jobs/min over the last 10 min; ETA 8.7 min
      running (2 workers):
        node3:1234:ab12cd34  heartbeat 2 s ago   batch_64 latent omega_p seed=5
        ...

A job is *done* when a completed record has its key, *running* when a worker holds its live
claim, *failed* when its last attempt failed (with the reason recorded), *waiting* otherwise.
A running claim whose heartbeat is older than ``stale_after`` (on the database's clock) is
listed as *abandoned*: the next worker to look takes it over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from typing import Any, Iterable

__all__ = ["SuiteStatus", "suite_status", "format_status"]


@dataclasses.dataclass
class SuiteStatus:
    suite: str
    storage: str
    jobs: int
    done: list[str]
    running: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    waiting: list[str]
    #: completed records in the last ``window`` seconds, per minute
    jobs_per_minute: float | None = None
    window: float = 600.0
    eta_minutes: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        from harness.experiments.records import redact

        out["storage"] = redact(self.storage)
        return out


def _label(job) -> str:
    return f"{job.stage} {job.dataset} {job.regularizer} seed={job.seed}"


def _no_storage_yet(storage: str) -> bool:
    if not storage.startswith("sqlite:///"):
        return False
    path = storage[len("sqlite:///") :]
    return path not in ("", ":memory:") and not os.path.exists(path)


def suite_status(
    suite,
    storage: str | None = None,
    overrides: Iterable[str] = (),
    quick: bool = False,
    results_root: str | os.PathLike = "results",
    stale_after: float = 120.0,
    window: float = 600.0,
) -> SuiteStatus:
    """The state of every job of ``suite`` (a name, file or
    :class:`~harness.experiments.suite.Suite`).

    Parameters
    ----------
    storage : str, optional
        The records' storage URL (default ``sqlite:///<results_root>/<suite>/runs.sqlite3``).
        A SQLite file that does not exist is not created: every job is waiting.
    overrides, quick
        As for ``run``: the expansion whose jobs are counted.
    stale_after : float
        Seconds: a running claim with an older heartbeat is reported abandoned.
    window : float
        Seconds of completed records that the throughput and the ETA are measured over.
    """
    from harness.experiments import records
    from harness.experiments.claims import DONE, FAILED, Claims
    from harness.experiments.suite import Suite, expand, load_suite, quick_suite

    if not isinstance(suite, Suite):
        suite = load_suite(suite, list(overrides))
    if quick:
        suite = quick_suite(suite)
    storage = storage or records.default_storage(suite.name, results_root)
    jobs = expand(suite)
    by_key = {j.key: j for j in jobs}
    claims, now, trials = {}, None, []
    if not _no_storage_yet(storage):
        import optuna

        records.check_storage(storage)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.load_study(study_name=suite.name, storage=records._rdb(storage))
            trials = study.get_trials(deepcopy=False)
        except KeyError:  # no study yet: nothing recorded
            trials = []
        read = Claims.peek(storage, suite.name)
        claims, now = read.claims, read.now
    completed, last_fail, finish_times = set(), {}, []
    for t in sorted(trials, key=lambda t: t.number):
        key = t.user_attrs.get("key")
        if key not in by_key:
            continue
        if t.state.name == "COMPLETE" and t.user_attrs.get("status") == "completed":
            completed.add(key)
            if t.datetime_complete is not None:
                finish_times.append(t.datetime_complete)
        elif t.state.name == "FAIL":
            last_fail[key] = t.user_attrs.get("reason", "") or "failed"
    done, running, failed, waiting = [], [], [], []
    for job in jobs:
        c = claims.get(job.key)
        if job.key in completed or (c is not None and c.state == DONE):
            done.append(job.key)
        elif c is not None and c.state == FAILED:
            failed.append(
                {"key": job.key, "job": _label(job), "reason": last_fail.get(job.key, "failed")}
            )
        elif c is not None:  # running or recording
            running.append(_running(job, c, now, stale_after))
        else:
            waiting.append(job.key)
    rate, eta = _throughput(finish_times, window, len(waiting) + len(running))
    return SuiteStatus(
        suite.name,
        storage,
        len(jobs),
        done,
        running,
        failed,
        waiting,
        jobs_per_minute=rate,
        window=window,
        eta_minutes=eta,
    )


def _running(job, c, now: float | None, stale_after: float) -> dict[str, Any]:
    """The status line's fields of ``job``, held by the live claim ``c``."""
    age = None if now is None else now - float(c.heartbeat)
    return {
        "key": job.key,
        "job": _label(job),
        "worker": c.worker,
        "host": c.host,
        "pid": c.pid,
        "state": c.state,
        "heartbeat_age": age,
        "attempts": c.attempts,
        "abandoned": age is not None and age > stale_after,
    }


def _throughput(finish_times: list, window: float, left: int):
    """``(jobs per minute, ETA in minutes)`` over the last ``window`` seconds of records
    (``None`` each when they do not tell)."""
    rate = eta = None
    if finish_times:
        # trials' datetime_complete is the recording worker's local time (Optuna): compare it
        # with the newest one, not with this machine's clock
        newest = max(finish_times)
        recent = [t for t in finish_times if newest - t <= dt.timedelta(seconds=window)]
        span = (newest - min(recent)).total_seconds()
        if len(recent) >= 2 and span > 0:
            rate = 60.0 * (len(recent) - 1) / span
            eta = left / rate if rate > 0 else None
    return rate, eta


def format_status(s: SuiteStatus, verbose: bool = False) -> str:
    """The status as plain lines (the running jobs by worker, failures with their reasons)."""
    from harness.experiments.records import redact

    lines = [
        f"{s.suite}: {s.jobs} jobs: {len(s.done)} done, {len(s.running)} running, "
        f"{len(s.failed)} failed, {len(s.waiting)} waiting  ({redact(s.storage)})"
    ]
    if s.jobs_per_minute is not None:
        eta = (
            f"; ETA {s.eta_minutes:.1f} min"
            if s.eta_minutes is not None and (s.waiting or s.running)
            else ""
        )
        lines.append(
            f"  throughput {s.jobs_per_minute:.1f} jobs/min over the last "
            f"{s.window / 60:.0f} min of records{eta}"
        )
    if s.running:
        workers: dict[str, list[dict]] = {}
        for r in s.running:
            workers.setdefault(r["worker"], []).append(r)
        lines.append(f"  running ({len(workers)} worker{'s' if len(workers) != 1 else ''}):")
        for w, rs in sorted(workers.items()):
            for r in rs:
                age = (
                    ""
                    if r["heartbeat_age"] is None
                    else f"heartbeat {r['heartbeat_age']:.0f} s ago"
                )
                flag = "  ABANDONED: the next worker takes it over" if r["abandoned"] else ""
                again = f" (attempt {r['attempts']})" if r["attempts"] > 1 else ""
                lines.append(f"    {w}  {age}  {r['job']}{again}{flag}")
    if s.failed:
        lines.append(
            f"  failed ({len(s.failed)}; `otransfer run`/`resume` tries them again, "
            "`worker` does not):"
        )
        shown = s.failed if verbose else s.failed[:10]
        for f in shown:
            lines.append(f"    {f['job']} ({f['key']}): {f['reason']}")
        if len(shown) < len(s.failed):
            lines.append(f"    ... {len(s.failed) - len(shown)} more (--verbose)")
    if not s.running and not s.waiting and not s.failed:
        lines.append("  complete: `otransfer report SUITE` writes its tables")
    return "\n".join(lines)
