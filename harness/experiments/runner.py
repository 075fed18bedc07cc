"""Run a suite: expand it, train each stage's jobs in order, record every job.

Teachers are trained once: their artefact is ``<results>/<suite>/artefacts/<key>.pt`` (the
``state_dict``), reused when present. A student loads its teacher's (and its ``init`` stage's)
artefact by that job's key (in its config). Jobs whose key is already completed in the storage
are skipped, and a job interrupted mid-training resumes from its last epoch checkpoint
(``artefacts/<key>.ckpt``, removed once the job is recorded), so ``run`` after a crash or a
kill is a resume that loses at most one epoch.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from harness.experiments.artefacts import load_pending, save_pending, unlink
from harness.experiments.suite import Job, Suite, expand, load_suite, quick_suite
from harness.experiments.train_job import job_deps, job_inputs, job_metrics, run_job, train_config

# run_job, quick_suite: also reached through this module (the suite run calls run_job here)
__all__ = ["run_suite", "RunSummary", "quick_suite", "run_job"]


@dataclasses.dataclass
class RunSummary:
    suite: str
    storage: str
    jobs: int
    skipped: int
    completed: int
    failed: int
    wall_time: float
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    keys: list[str] = dataclasses.field(default_factory=list)
    #: jobs other workers completed while this one ran
    by_others: int = 0


class Next(enum.Enum):
    """What :meth:`_SuiteRun.pick` found to do next."""

    RUN = "run"  # a job is claimed: run it
    WAIT = "wait"  # every job left is held by others or waits on one that is
    DONE = "done"  # nothing is left to do


@dataclasses.dataclass(frozen=True)
class Pick:
    """The outcome of choosing the next job: what to do, and the job claimed (``RUN``)."""

    next: Next
    job: Job | None = None


class Claimed(enum.Enum):
    """The outcome of claiming one job (:meth:`_SuiteRun.claim`)."""

    OURS = "ours"  # the claim is ours: run the job
    HELD = "held"  # another worker holds it
    SKIP = "skip"  # done (by another worker, or recorded by a lost one) or failed


def run_suite(
    suite: Suite | str | os.PathLike,
    storage: str | None = None,
    overrides: Iterable[str] = (),
    progress: bool = True,
    quick: bool = False,
    results_root: str | os.PathLike = "results",
    on_job: Callable[[Job, Mapping[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = print,
    device: str | None = None,
    worker: bool = False,
    stale_after: float = 120.0,
    heartbeat: float = 10.0,
    poll: float = 2.0,
    jobs: Iterable[Job] | None = None,
    record_extra: Mapping[str, Mapping[str, Any]] | None = None,
    batch: bool = True,
    only: Iterable[str] = (),
    on_epoch: Callable[[Job, int, dict], None] | None = None,
    threads: int | None = None,
) -> RunSummary:
    """Run every job of ``suite`` not yet completed in ``storage``; record each one.

    Any number of processes, on any number of machines, may run the same suite on the same
    storage at once: each job is claimed before it runs (:mod:`harness.experiments.claims`), so
    none is run twice to completion, and one whose worker died is taken over and resumed from
    its last epoch checkpoint. A job waits for its teacher and init jobs, whoever runs them.

    Parameters
    ----------
    suite : Suite, path or name
        A loaded suite, a suite file or a name in ``suites/``.
    storage : str, optional
        Any Optuna storage URL; default ``sqlite:///<results_root>/<suite>/runs.sqlite3``.
    overrides : iterable of str
        ``--set`` strings (``stages.students.train.epochs=2``), applied before expansion.
    progress : bool
        In a terminal (standard error a TTY, ``log`` left as ``print``): one suite bar and the
        running job's bar beneath it (:mod:`harness.experiments.progress`). Otherwise, or when
        False, one plain line per job through ``log``.
    quick : bool
        1 epoch per stage and the first seed only (smoke run).
    results_root : path
        Artefacts go to ``<results_root>/<suite>/artefacts/<key>.pt``; workers on several
        machines need it on a shared file system.
    on_job : callable, optional
        ``on_job(job, metrics)`` after each recorded job (what it raises propagates).
    log : callable, optional
        One line per job; ``None`` is silent.
    device : str, optional
        Train every job on this device (``"cuda"`` ...), overriding ``train.device`` without
        changing the jobs' keys.
    worker : bool
        ``otransfer worker``: leave the jobs that failed earlier alone (``run``/``resume``
        forget those failures and try them again).
    stale_after, heartbeat : float
        Seconds: a claim whose heartbeat is older than ``stale_after`` is taken over by another
        worker (a dead process on the same host at once); claims beat every ``heartbeat``.
    poll : float
        Seconds between looks at the storage while every job left is held by other workers.
    jobs : iterable of Job, optional
        Run these jobs instead of the suite's expansion (``tune``: the teacher stages of the
        searched stage, the re-runs of its best point); teachers they load are looked up in
        the suite's expansion.
    record_extra : mapping, optional
        Extra attributes of the records of some jobs, by key.
    batch : bool
        Train the jobs that differ only in seed (and regularizer weights) as one batched model
        where that is exact (:mod:`harness.experiments.batching`); False: one at a time.
    only : iterable of str
        ``--only KEY=V[,V]`` filters: run only the jobs they match, and those they load.
    on_epoch : callable, optional
        ``on_epoch(job, epoch, record)`` after each epoch of a job trained alone (``--smoke``
        interrupts there to prove the resume, :mod:`harness.experiments.smoke`).
    threads : int, optional
        CPU threads of each job (``--threads``); default :mod:`harness.training.threads`'s
        policy (one for a small model; the cores shared among the workers otherwise).
    """
    from harness.experiments.suite import with_overrides

    overrides = list(overrides)
    if not isinstance(suite, Suite):
        suite = load_suite(suite, overrides)
    elif overrides:
        suite = with_overrides(suite, overrides)
    if quick:
        suite = quick_suite(suite)
    if only and jobs is None:  # --only: a subset, same keys (harness.experiments.only)
        from harness.experiments.only import select_jobs

        jobs = select_jobs(expand(suite), only)
    run = _SuiteRun(
        suite,
        storage,
        results_root,
        jobs,
        progress,
        log,
        device,
        stale_after,
        heartbeat,
        poll,
        record_extra,
    )
    run.batch.enabled = run.batch.enabled and batch and not run.multi
    from harness.experiments.preflight import check_data_roots

    check_data_roots(j for j in run.jobs if not run.finished(j.key))  # before any job starts
    run.on_epoch, run.threads = on_epoch, threads
    try:
        run.open_claims(reset_failed=not worker)
        while (job := run.next_job()) is not None:
            metrics = run.run(job)
            if on_job is not None and metrics is not None:
                on_job(job, metrics)
    finally:
        run.close()
    return run.finish()


def _warm_backends(jobs) -> None:
    """Import the optional backends the jobs use (KeOps, through GeomLoss too) before the
    progress bars are drawn: pykeops prints its warnings on import, which would break into a
    bar's line."""
    import contextlib
    import importlib

    text = " ".join(j.config_json() for j in jobs[:2000])
    for word, module in (("keops", "pykeops"), ("geomloss", "pykeops")):
        if word in text:
            with contextlib.suppress(Exception):
                importlib.import_module(module)


class _SuiteRun:
    """One call of :func:`run_suite`: the jobs, what is done, this worker's claims, and the
    steps of the loop as methods (choose and claim a job -> start its record -> train ->
    move the claim to ``recording`` -> write the record -> close the claim -> say so)."""

    def __init__(
        self,
        suite: Suite,
        storage,
        results_root,
        jobs,
        progress,
        log,
        device,
        stale_after,
        heartbeat,
        poll,
        record_extra,
    ):
        from harness.experiments import records
        from harness.experiments.progress import SuiteBar, is_terminal
        from harness.training import distributed as ddp

        self.suite, self.device, self.poll = suite, device, poll
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self.record_extra = record_extra or {}
        self.storage = storage = storage or records.default_storage(suite.name, results_root)
        self.root = Path(results_root)
        self.artefacts = self.root / suite.name / "artefacts"
        expanded = expand(suite)
        self.jobs = jobs = expanded if jobs is None else list(jobs)
        self.by_key = {j.key: j for j in [*expanded, *jobs]}
        self.number = {j.key: i for i, j in enumerate(jobs, 1)}
        # jobs whose weights later stages load (as teacher or as init) keep an artefact
        self.teacher_keys = {d for j in self.by_key.values() for d in job_deps(j)}
        # under torchrun every rank trains each job (DDP); rank 0 alone claims and records
        self.multi = ddp.world_size() > 1
        if self.multi:
            ddp.init_from_env(device or "cpu")
        self.main = main = ddp.is_main()
        self.study = records.open_study(storage, suite.name) if main else None
        # the completed jobs, and what their records say of their weights (teachers)
        self.arts = records.done_artefacts(storage, suite.name) if main else {}
        self.done = set(self.arts)
        self.say = (log if main else None) or (lambda s: None)
        # a terminal gets one suite bar (and the job's bar beneath it); a log a line per job
        self.bar_mode = bool(progress and main and log is print and is_terminal())
        self.t0 = time.perf_counter()
        self.summary = RunSummary(
            suite.name, storage, len(jobs), 0, 0, 0, 0.0, keys=[j.key for j in jobs]
        )
        for job in jobs:
            if self.finished(job.key):
                self.summary.skipped += 1
                if not self.bar_mode:
                    self.say(f"{self.tag(job)}: done ({job.key}), skipped")
        if not self.bar_mode and main:  # how much work there is, before the first job
            from harness.experiments.secrets import redact

            left = len(jobs) - self.summary.skipped
            self.say(
                f"{suite.name}: {len(jobs)} jobs, {self.summary.skipped} already done, "
                f"{left} to run; records in {redact(storage)}"
            )
        if self.bar_mode:
            _warm_backends(jobs)  # their import-time warnings print once, above the bars
        self.bar = (
            SuiteBar(suite.name, len(jobs), done=self.summary.skipped) if self.bar_mode else None
        )
        if self.bar is not None:
            self.say = self.bar.write  # lines a person must see go above the bars
        self.first_done = set(self.done)
        self.claims = None
        self.tried: set[str] = set()  # failed here: not tried again in this run
        self.since = None  # the database time of pick's last read of the claims
        self.unkept: set[str] = set()  # why a pending result could not be kept, said once
        self.threads: int | None = None  # each job's CPU threads (None: the policy's)
        from harness.experiments.batching import SeedBatches

        # jobs differing only in seed/alpha: trained together (run_job's steps, passed in)
        self.batch = SeedBatches(self, job_inputs, train_config, job_metrics)

    # ---- small helpers
    def tag(self, job: Job) -> str:
        """``[k/N] stage dataset row-with-grid-point seed=S``."""
        return (
            f"[{self.number[job.key]}/{len(self.jobs)}] {job.stage} {job.dataset} "
            f"{job.label or job.regularizer} seed={job.seed}"
        )

    def eta(self) -> str:
        """``; 12 of 170 done, ~3.5 min left`` from this process's pace so far."""
        done = len(self.done & set(self.number))
        left = len(self.jobs) - done
        ran = self.summary.completed + self.summary.failed
        if not ran or not left:
            return f"; {done} of {len(self.jobs)} done"
        secs = (time.perf_counter() - self.t0) / ran * left
        when = f"{secs / 60:.1f} min" if secs >= 90 else f"{secs:.0f} s"
        return f"; {done} of {len(self.jobs)} done, ~{when} left"

    def finished(self, key: str) -> bool:
        """Recorded done in the storage, whatever this worker's results folder holds: a job is
        never recorded done twice (a teacher whose weights are elsewhere fails its students
        with a line saying where they are, :func:`_artefact`)."""
        return key in self.done

    def dep_records(self, job: Job) -> dict[str, Any]:
        """The ``artefact*`` attributes of the records of ``job``'s teacher and init jobs
        (read again from the storage for those done by other workers since)."""
        from harness.experiments import records

        deps = job_deps(job)
        if any(d not in self.arts for d in deps):
            self.arts.update(
                self.store(
                    lambda: records.done_artefacts(self.storage, self.suite.name),
                    f"reading the records of {job.key}'s teacher",
                )
            )
        return {d: self.arts[d] for d in deps if d in self.arts}

    def store(self, fn, what):
        """A storage operation, retried through an outage (records.retrying)."""
        from harness.experiments import records

        return records.retrying(fn, what, self.storage, say=self.say)

    def open_claims(self, reset_failed: bool) -> None:
        from harness.experiments.claims import Claims

        if not self.main:
            return
        self.claims = Claims(
            self.storage, self.suite.name, stale_after=self.stale_after, heartbeat=self.heartbeat
        )
        if reset_failed:  # run / resume try failed jobs again; a worker leaves them alone
            self.claims.reset_failed()

    # ---- choosing the next job
    def pick(self) -> Pick:
        """The next job this worker claims (:attr:`Next.RUN`, with the job), :attr:`Next.WAIT`
        when every job left is held by others or waits on one that is, or :attr:`Next.DONE`
        when nothing is left to do."""
        from harness.experiments.claims import DONE, FAILED

        claims, done = self.claims, self.done
        for key in list(self.batch.done):  # trained in this worker's batch, claimed by it
            if self.finished(key) or key in self.tried:
                self.batch.done.pop(key)
            else:
                return Pick(Next.RUN, self.by_key[key])
        # the live and failed claims and those done since the last read (1 s of margin for a
        # late commit): the read stays small however many jobs are done; a job done by another
        # worker and missed is learnt from try_claim's refusal below
        read = claims.read(unfinished=True, done_since=self.since)
        states, now = read.claims, read.now
        self.since = now - 1.0
        done.update(k for k, c in states.items() if c.state == DONE)
        wait = False
        for job in [j for j in self.jobs if not self.finished(j.key) and j.key not in self.tried]:
            c = states.get(job.key)
            if c is not None and c.state == FAILED:
                continue  # another worker's failure in this run: left as it is
            if any(
                not (
                    self.finished(d)
                    or d in self.tried
                    or d not in self.number
                    or (d in states and states[d].state == FAILED)
                )
                for d in job_deps(job)
            ):
                wait = True  # its teacher is not there yet
                continue
            if c is not None and c.state != DONE and not claims.is_abandoned(c, now):
                wait = True  # another worker runs it
                continue
            got = self.claim(job, now)
            if got is Claimed.SKIP:
                continue
            if got is Claimed.HELD:
                wait = True
                continue
            return Pick(Next.RUN, job)
        return Pick(Next.WAIT if wait else Next.DONE)

    def claim(self, job: Job, now: float | None = None) -> Claimed:
        """Claim ``job``: :attr:`Claimed.OURS`, :attr:`Claimed.HELD` when another worker holds
        it, :attr:`Claimed.SKIP` when it turns out done (by another worker, or recorded by a
        lost one) or failed. ``now``: the database's clock at the last read of the claims."""
        from harness.experiments import records
        from harness.experiments.claims import DONE, FAILED

        claims, done = self.claims, self.done
        res = claims.try_claim(job.key, now=now)
        got = res.claim
        if got is None and res.refused == DONE:  # done by another worker
            done.add(job.key)
            return Claimed.SKIP
        if got is None and res.refused == FAILED:
            return Claimed.SKIP  # another worker's failure in this run: left as it is
        if got is None:
            return Claimed.HELD
        if got.attempts > 1 and res.previous:  # from a lost worker
            n = records.fail_orphans(self.study, job.key, res.previous)
            self.say(
                f"{self.tag(job)}: taken over from {res.previous} (attempt "
                f"{got.attempts}; {n} orphan record(s) marked failed)"
            )
            if job.key in records.done_keys(self.storage, self.suite.name):
                done.add(job.key)  # it died after recording
                claims.begin_record(job.key)
                claims.finish(job.key, ok=True)
                return Claimed.SKIP
        return Claimed.OURS

    def claim_sibling(self, job: Job) -> bool:
        """Claim a job to train in the batch of the job being run (:mod:`batching`): True
        when the claim is ours."""
        if self.claims is None:
            return True
        return self.store(lambda: self.claim(job), f"claiming {job.key}") is Claimed.OURS

    def next_job(self) -> Job | None:
        from harness.training import distributed as ddp

        job = None
        if self.main:
            got = self.store(self.pick, "choosing the next job")
            while got.next is Next.WAIT:
                time.sleep(self.poll)
                got = self.store(self.pick, "choosing the next job")
            job = got.job
        if self.multi:  # every rank trains the job rank 0 claimed
            job = self.by_key.get(ddp.broadcast_object(job.key if job else None))
        return job

    # ---- one job
    def run(self, job: Job) -> Mapping[str, Any] | None:
        """Train ``job`` and record it (rank 0); the metrics recorded (None on other ranks)."""
        from harness.experiments import records
        from harness.training import distributed as ddp
        from harness.training.checkpoints import remove_checkpoint

        deps = self.dep_records(job) if self.main else None
        if self.multi:  # the other ranks verify the teacher's weights as rank 0 does
            deps = ddp.broadcast_object(deps)
        if self.bar is not None:
            self.bar.start(
                f"{job.stage} {job.dataset} {job.label or job.regularizer} seed={job.seed}"
            )
        if not self.main:  # a DDP rank: train, rank 0 records (a failure too)
            try:
                run_job(
                    job,
                    self.by_key,
                    self.artefacts,
                    progress=False,
                    save=False,
                    device=self.device,
                    records=deps,
                    root=self.root,
                    threads=self.threads,
                )
            except Exception:
                pass
            return None
        claims, study = self.claims, self.study
        trial = self.store(
            lambda: records.start_record(
                study, job, extra={**self.record_extra.get(job.key, {}), "worker": claims.worker}
            ),
            f"starting the record of {job.key}",
        )
        try:
            metrics = self.train(job, deps)
        except Exception as exc:  # recorded, and the run goes on
            metrics = {
                "status": "failed",
                "reason": " ".join(f"{type(exc).__name__}: {exc}".split()),
            }
        except BaseException:  # Ctrl-C, SIGTERM: record the interruption, then stop
            records.finish_record(study, trial, {"status": "failed", "reason": "interrupted"})
            claims.release(job.key)  # resume (or another worker) takes it at once
            raise
        metrics = self.record(job, trial, metrics)
        unlink(self.artefacts / f"{job.key}.result.json")
        remove_checkpoint(self.artefacts / f"{job.key}.ckpt")  # recorded: resume no more
        return metrics

    def train(self, job: Job, deps: Mapping[str, Any]) -> dict[str, Any]:
        """The job's metrics: the result a worker stopped by a storage outage kept (once its
        proof verifies), else :func:`run_job`'s, kept beside the checkpoint until recorded."""
        say = lambda msg: self.say(f"{self.tag(job)}: {msg}")  # noqa: E731
        pending = self.artefacts / f"{job.key}.result.json"
        metrics, why = load_pending(pending, job)  # trained before an outage stopped a worker
        if why:
            say(why)
        if metrics is not None:
            say(f"recording the result trained before the storage went away ({pending.name})")
            return metrics
        metrics = self.batch.metrics(
            job,
            lambda: run_job(
                job,
                self.by_key,
                self.artefacts,
                self.bar_mode,
                save=job.key in self.teacher_keys,
                device=self.device,
                records=deps,
                root=self.root,
                say=say,
                on_epoch=self.epoch_hook(job),
                threads=self.threads,
            ),
        )  # its seed batch or alone
        if metrics["status"] == "completed":  # kept until the storage has it
            why = save_pending(pending, job, metrics, self.root)
            if why and why not in self.unkept:
                self.unkept.add(why)
                say(why)
        return metrics

    def epoch_hook(self, job: Job):
        hook = getattr(self, "on_epoch", None)
        return None if hook is None else (lambda epoch, rec: hook(job, epoch, rec))

    def record(self, job: Job, trial, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
        """Move the claim to ``recording``, write the record, close the claim, say so."""
        from harness.experiments import records

        claims = self.claims
        ok = metrics["status"] == "completed"
        if ok and not self.store(
            lambda: claims.begin_record(job.key), f"claiming the record of {job.key}"
        ):
            # we stalled, another worker has it
            metrics = {
                **metrics,
                "status": "failed",
                "reason": "claim lost to another worker (this one stalled longer "
                f"than stale_after={self.stale_after:g} s)",
            }
            ok = None
        self.store(
            lambda: records.finish_record(self.study, trial, metrics),
            f"recording the result of {job.key}",
        )
        if ok is not None:
            self.store(lambda: claims.finish(job.key, ok=ok), f"closing the claim of {job.key}")
        if self.bar is not None:
            self.bar.finish(bool(ok))
        if ok:
            self.summary.completed += 1
            self.done.add(job.key)
            self.arts[job.key] = {k: metrics.get(k) for k in records.ARTEFACT_KEYS}
            if self.bar is None:
                wall = metrics.get("wall_time")
                self.say(
                    f"{self.tag(job)}: test {100 * metrics['test_accuracy']:.1f}%"
                    + (f" ({wall:.1f} s)" if isinstance(wall, (int, float)) else "")
                    + self.eta()
                )
        else:
            self.tried.add(job.key)
            self.summary.failed += 1
            self.summary.failures.append((job.key, metrics.get("reason", "")))
            self.say(f"{self.tag(job)}: FAILED: {metrics.get('reason', '')}")
        return metrics

    # ---- the end
    def close(self) -> None:
        if self.claims is not None:
            self.claims.close()
        if self.bar is not None:
            self.bar.close()

    def finish(self) -> RunSummary:
        s = self.summary
        s.by_others = len(set(self.done) - self.first_done) - s.completed
        s.wall_time = time.perf_counter() - self.t0
        return s
