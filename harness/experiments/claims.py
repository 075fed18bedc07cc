"""Job claims: many workers, one storage, every job run to completion once.

Records live in an Optuna storage (:mod:`harness.experiments.records`); Optuna has no notion
of "this job is taken", so the claims live beside the records, in the same database, in one table::

    otransfer_claims(suite, key, worker, host, pid, state, heartbeat, attempts)
    PRIMARY KEY (suite, key)

A worker takes a job by inserting its row; the primary key makes that atomic on SQLite and on
PostgreSQL alike (the loser gets an ``IntegrityError``). A claim moves

    running --(begin_record)--> recording --(finish)--> done
    running --(finish, failed)--> failed

and every transition is a compare-and-set on ``(worker, state)``, so a worker that lost its claim
cannot record. While a worker holds claims a background thread refreshes their ``heartbeat``.
A claim is *taken over* when its worker is gone: on the same host when its process no longer
exists (a SIGKILL'd worker is replaced at once), from any host when its heartbeat is older than
``stale_after`` seconds. The new owner resumes the job from its epoch checkpoint
(``artefacts/<key>.ckpt``), so the artefact directory must be shared by all workers (one
machine, or a network file system).

A ``done`` claim always has its record: the record is written between ``recording`` and
``done``, and a ``recording`` claim taken over is first checked against the records.

Heartbeats are stamped and compared on the **database's clock** (as Optuna's RDB heartbeats
are, with the server's ``now``): every ``heartbeat`` written is the database's current time, and a
claim's age is the database's time minus it, so a worker whose own clock is hours off neither
takes a live claim nor loses its own. PostgreSQL reads ``clock_timestamp()`` on the server;
SQLite, an embedded database, reads the clock of the machine that opens the file (workers on one
machine share it). No worker's ``time.time()`` enters a claim.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Iterable

__all__ = [
    "Claims",
    "Claim",
    "ClaimRead",
    "ClaimResult",
    "RUNNING",
    "RECORDING",
    "DONE",
    "FAILED",
]

RUNNING, RECORDING, DONE, FAILED = "running", "recording", "done", "failed"
LIVE = (RUNNING, RECORDING)
TABLE = "otransfer_claims"
#: worker ids of this process's open :class:`Claims` (a claim of this process's pid whose
#: worker is not here was left by an earlier run in this process: abandoned)
_OPEN: set[str] = set()


@dataclass(frozen=True)
class Claim:
    """One row of the claims table."""

    key: str
    worker: str
    host: str
    pid: int
    state: str
    heartbeat: float
    attempts: int


@dataclass(frozen=True)
class ClaimRead:
    """The claims read at once, by key, and the database's clock at the read (what
    :meth:`Claims.is_abandoned` compares their heartbeats with)."""

    claims: dict[str, Claim]
    now: float


@dataclass(frozen=True)
class ClaimResult:
    """What :meth:`Claims.try_claim` did: ``claim`` is the claim now ours, or ``None`` when it
    was refused; ``refused`` is then the state of the claim in the way (``done``: the job is
    finished; ``failed``; or a live state: another worker holds it), ``None`` otherwise;
    ``previous`` is the worker id of the abandoned claim taken over (``attempts > 1``)."""

    claim: Claim | None = None
    refused: str | None = None
    previous: str | None = None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def db_now_sql(dialect: str):
    """A SQL expression of the database's current time in seconds since the epoch (float)."""
    import sqlalchemy as sa

    if dialect == "sqlite":  # julianday('now') has millisecond resolution
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)
    if dialect == "postgresql":  # the server's wall clock now (not the transaction's start)
        return sa.literal_column("extract(epoch from clock_timestamp())::float8", sa.Float)
    if dialect in ("mysql", "mariadb"):
        return sa.literal_column("UNIX_TIMESTAMP(NOW(6))", sa.Float)
    raise ValueError(
        f"claims: no database clock for SQL dialect {dialect!r} (SQLite, "
        "PostgreSQL and MySQL are supported)"
    )


def make_engine(url: str):
    import sqlalchemy as sa

    kwargs = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # writers queue on SQLite's file lock instead of failing at once
        kwargs["connect_args"] = {"timeout": 120}
    return sa.create_engine(url, **kwargs)


def claims_table(meta):
    """The claims table (:data:`TABLE`) in ``meta``."""
    import sqlalchemy as sa

    return sa.Table(
        TABLE,
        meta,
        sa.Column("suite", sa.String(512), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("worker", sa.String(512), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("heartbeat", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
    )


def read_now(conn, now_sql) -> float:
    """The database's clock through ``conn`` (``now_sql``: :func:`db_now_sql`)."""
    import sqlalchemy as sa

    return float(conn.execute(sa.select(now_sql)).scalar_one())


def select_claims(
    conn,
    t,
    suite: str,
    keys: Iterable[str] | None = None,
    unfinished: bool = False,
    done_since: float | None = None,
) -> dict[str, Claim]:
    """The claims of ``suite`` in table ``t`` through ``conn`` (:meth:`Claims.read`)."""
    import sqlalchemy as sa

    q = sa.select(t).where(t.c.suite == suite)
    if keys is not None:  # in SQL: try_claim reads one row, not the suite's
        q = q.where(t.c.key.in_(sorted(set(keys))))
    if unfinished:
        q = (
            q.where(t.c.state != DONE)
            if done_since is None
            else q.where(sa.or_(t.c.state != DONE, t.c.heartbeat >= float(done_since)))
        )
    rows = conn.execute(q).mappings().all()
    return {
        r["key"]: Claim(
            r["key"], r["worker"], r["host"], r["pid"], r["state"], r["heartbeat"], r["attempts"]
        )
        for r in rows
    }


class Claims:
    """The claims of one suite's jobs in ``storage`` (any SQLAlchemy URL Optuna accepts).

    Parameters
    ----------
    storage : str
        The records' storage URL (``sqlite:///...``, ``postgresql+psycopg2://...``).
    suite : str
        Suite name (the Optuna study of its records).
    stale_after : float
        Seconds without a heartbeat after which another host takes a claim over.
    heartbeat : float
        Seconds between heartbeats of the claims this worker holds.
    worker : str, optional
        This worker's id; default ``host:pid:random``.
    """

    def __init__(
        self,
        storage: str,
        suite: str,
        stale_after: float = 120.0,
        heartbeat: float = 10.0,
        worker: str | None = None,
    ):
        import sqlalchemy as sa

        if heartbeat <= 0 or stale_after <= heartbeat:
            raise ValueError(
                f"need 0 < heartbeat < stale_after; got heartbeat={heartbeat}, "
                f"stale_after={stale_after}"
            )
        self.suite = suite
        self.stale_after = float(stale_after)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker = worker or f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self._engine = make_engine(storage)
        self._now = db_now_sql(self._engine.dialect.name)
        meta = sa.MetaData()
        self._t = claims_table(meta)
        from harness.experiments.records import check_schema, creation_race

        check_schema(self._engine, meta, "otransfer's claims")

        for attempt in range(8):  # a fresh database: other workers may be creating it too
            try:
                meta.create_all(self._engine, checkfirst=True)
                break
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError) as exc:
                if not creation_race(exc) or attempt == 7:
                    raise
                time.sleep(0.2 * (attempt + 1))
        self._held: set[str] = set()
        _OPEN.add(self.worker)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(
            target=self._beat_loop,
            args=(float(heartbeat),),
            name="otransfer-claims-heartbeat",
            daemon=True,
        )
        self._beat.start()

    # ---- reading
    def db_now(self) -> float:
        """The database's clock (seconds since the epoch): what heartbeats are stamped with."""
        with self._engine.connect() as c:
            return read_now(c, self._now)

    @staticmethod
    def peek(storage: str, suite: str) -> ClaimRead:
        """The claims of ``suite`` in ``storage`` and the database's clock, read without a
        worker: nothing is written (no table is created; none there reads as no claims)."""
        import sqlalchemy as sa

        engine = make_engine(storage)
        try:
            with engine.connect() as c:
                now = read_now(c, db_now_sql(engine.dialect.name))
                if not sa.inspect(c).has_table(TABLE):
                    return ClaimRead({}, now)
                return ClaimRead(select_claims(c, claims_table(sa.MetaData()), suite), now)
        finally:
            engine.dispose()

    def read(
        self,
        keys: Iterable[str] | None = None,
        unfinished: bool = False,
        done_since: float | None = None,
    ) -> ClaimRead:
        """The claims of this suite (of ``keys`` when given), by key, with the database's clock
        at the read.

        ``unfinished``: only the claims not ``done`` (running, recording, failed), and the
        ``done`` ones stamped at or after ``done_since`` (the database's clock): what a worker
        choosing its next job reads, so that the read stays as small as the live claims
        however many jobs are done. A job done but not read (committed late) is refused by
        :meth:`try_claim`, whose result says so (``refused``)."""
        with self._engine.connect() as c:
            claims = select_claims(c, self._t, self.suite, keys, unfinished, done_since)
            now = read_now(c, self._now)
        return ClaimRead(claims, now)

    def states(
        self,
        keys: Iterable[str] | None = None,
        unfinished: bool = False,
        done_since: float | None = None,
    ) -> dict[str, Claim]:
        """The claims of :meth:`read`, by key, without the clock."""
        return self.read(keys, unfinished, done_since).claims

    def is_abandoned(self, claim: Claim, now: float | None = None) -> bool:
        """Whether ``claim``'s worker is gone: a dead process on this host, or a heartbeat
        older than ``stale_after`` on the database's clock (``now``: that clock, read with
        the claims, :attr:`ClaimRead.now`; read afresh when not given)."""
        if claim.state not in LIVE:
            return False
        if now is None:
            now = self.db_now()
        if claim.host == self.host and (
            (claim.pid != self.pid and not pid_alive(claim.pid))
            or (claim.pid == self.pid and claim.worker not in _OPEN)
        ):
            return True
        return now - claim.heartbeat > self.stale_after

    # ---- transitions
    def try_claim(
        self, key: str, retake_done: bool = False, now: float | None = None
    ) -> ClaimResult:
        """Take ``key``: a compare-and-set whose :class:`ClaimResult` says what happened. Its
        ``claim`` is ``None`` when another worker holds the job (or it is done/failed), else
        the claim now ours; ``attempts > 1`` tells that an abandoned claim was taken over (its
        previous owner's worker id in ``previous``).

        ``retake_done``: also take a ``done`` claim (its job must be run again, e.g. a teacher
        whose weights file was deleted). ``now``: the database's clock last read (the stamp
        of a claim returned at once; read afresh when not given)."""
        import sqlalchemy as sa

        t = self._t
        stamp = self.db_now() if now is None else now  # read before the claim is ours
        try:
            with self._engine.begin() as c:
                c.execute(
                    t.insert().values(
                        suite=self.suite,
                        key=key,
                        worker=self.worker,
                        host=self.host,
                        pid=self.pid,
                        state=RUNNING,
                        heartbeat=self._now,
                        attempts=1,
                    )
                )
            with self._lock:
                self._held.add(key)
            return ClaimResult(Claim(key, self.worker, self.host, self.pid, RUNNING, stamp, 1))
        except sa.exc.IntegrityError:
            pass
        read = self.read([key])
        old = read.claims.get(key)
        if old is None:  # released between our insert and our read: try once more
            return self.try_claim(key, retake_done, read.now) if not retake_done else ClaimResult()
        if not (self.is_abandoned(old, read.now) or (retake_done and old.state == DONE)):
            return ClaimResult(refused=old.state)
        if not self._take_over(old):
            return ClaimResult(refused=RUNNING)  # another worker took it over first
        with self._lock:
            self._held.add(key)
        mine = Claim(key, self.worker, self.host, self.pid, RUNNING, read.now, old.attempts + 1)
        return ClaimResult(mine, previous=old.worker)

    def _take_over(self, old: Claim) -> bool:
        """Compare-and-set on the row read: ``old`` becomes ours if it is still as read."""
        t = self._t
        with self._engine.begin() as c:
            res = c.execute(
                t.update()
                .where(
                    t.c.suite == self.suite,
                    t.c.key == old.key,
                    t.c.worker == old.worker,
                    t.c.state == old.state,
                    t.c.heartbeat == old.heartbeat,
                )
                .values(
                    worker=self.worker,
                    host=self.host,
                    pid=self.pid,
                    state=RUNNING,
                    heartbeat=self._now,
                    attempts=old.attempts + 1,
                )
            )
        return res.rowcount == 1

    def _move(self, key: str, frm: str, to: str) -> bool:
        t = self._t
        with self._engine.begin() as c:
            res = c.execute(
                t.update()
                .where(
                    t.c.suite == self.suite,
                    t.c.key == key,
                    t.c.worker == self.worker,
                    t.c.state == frm,
                )
                .values(state=to, heartbeat=self._now)
            )
        return res.rowcount == 1

    def begin_record(self, key: str) -> bool:
        """``running -> recording`` if the claim is still ours: only then may we record."""
        return self._move(key, RUNNING, RECORDING)

    def finish(self, key: str, ok: bool) -> bool:
        """``recording -> done`` (``ok``) or ``running -> failed``; the claim is released."""
        moved = self._move(key, RECORDING, DONE) if ok else self._move(key, RUNNING, FAILED)
        with self._lock:
            self._held.discard(key)
        return moved

    def release(self, key: str) -> None:
        """Drop our claim (an interrupted job: another worker or ``resume`` takes it at once)."""
        t = self._t
        with self._engine.begin() as c:
            c.execute(
                t.delete().where(
                    t.c.suite == self.suite,
                    t.c.key == key,
                    t.c.worker == self.worker,
                    t.c.state.in_(LIVE),
                )
            )
        with self._lock:
            self._held.discard(key)

    def reset_failed(self) -> int:
        """Forget this suite's ``failed`` claims (``run``/``resume`` try failed jobs again);
        returns how many."""
        t = self._t
        with self._engine.begin() as c:
            res = c.execute(t.delete().where(t.c.suite == self.suite, t.c.state == FAILED))
        return res.rowcount

    # ---- heartbeat
    def _beat_loop(self, every: float) -> None:
        t = self._t
        while not self._stop.wait(every):
            with self._lock:
                held = list(self._held)
            if not held:
                continue
            try:
                with self._engine.begin() as c:
                    c.execute(
                        t.update()
                        .where(
                            t.c.suite == self.suite,
                            t.c.worker == self.worker,
                            t.c.key.in_(held),
                            t.c.state.in_(LIVE),
                        )
                        .values(heartbeat=self._now)
                    )
            except Exception:  # a storage hiccup: the next beat tries again
                pass

    def close(self) -> None:
        """Release the claims still held (their jobs did not finish), stop the heartbeat and
        close the connections."""
        with self._lock:
            held = list(self._held)
        for key in held:
            try:
                self.release(key)
            except Exception:  # storage gone: the claim goes stale and is taken over
                pass
        _OPEN.discard(self.worker)
        self._stop.set()
        self._beat.join(timeout=5)
        self._engine.dispose()

    def __enter__(self) -> "Claims":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
