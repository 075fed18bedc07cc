"""Run records in an Optuna storage: a suite is a study, a job is a trial.

Each trial carries user attributes: ``config`` (canonical JSON of the resolved config), ``key``,
``stage``, ``git_sha``, ``status`` (``completed`` / ``failed``), ``reason`` and the metrics
(``val_accuracy``, ``best_val_accuracy``, ``test_accuracy``, ``wall_time``, ``final_losses``).
Its value is the test accuracy. Records are append-only; tables are views of them
(:func:`records_frame`, :mod:`harness.reports.tables`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

# the one way a storage URL is shown (its password and secret query values masked)
from harness.experiments.secrets import check_url, open_error, redact, scrub

__all__ = [
    "default_storage",
    "open_study",
    "done_keys",
    "done_artefacts",
    "records_frame",
    "git_sha",
    "start_record",
    "finish_record",
    "fail_orphans",
    "check_storage",
    "open_rdb",
    "check_metrics",
    "ARTEFACT_KEYS",
]

#: the attributes of a teacher's record that locate and verify its weights file
ARTEFACT_KEYS = ("artefact", "artefact_bytes", "artefact_sha256")


def default_storage(suite: str, results_root: str | os.PathLike = "results") -> str:
    """``sqlite:///results/<suite>/runs.sqlite3`` (the directory is created). The database
    and its journals must not be links out of the results folder, folders, FIFOs or devices
    (SQLite follows links): :class:`~harness.training.safe_io.UnsafePathError` otherwise."""
    from harness.training import safe_io

    d = Path(results_root) / suite
    safe_io.ensure_dir(d, results_root)
    for name in ("runs.sqlite3", "runs.sqlite3-journal", "runs.sqlite3-wal", "runs.sqlite3-shm"):
        safe_io.check_target(d / name, results_root)
    return f"sqlite:///{d / 'runs.sqlite3'}"


@functools.lru_cache(maxsize=8)
def _rdb(storage: str):
    return open_rdb(storage)


def open_rdb(storage: str, **storage_kwargs):
    """An Optuna ``RDBStorage`` of ``storage`` (``storage_kwargs``: its other arguments, e.g.
    trial heartbeats): SQLite writers wait on the file lock, the schema-creation race of
    workers opening a fresh database is retried, and a storage that cannot be opened raises
    :class:`StorageError` naming it."""
    import optuna

    try:
        check_url(storage)  # unparseable, or a raw '@' in the password: before connecting
    except ValueError as exc:
        raise StorageError(str(exc)) from None
    kwargs = {"pool_pre_ping": True}
    if storage.startswith("sqlite"):  # several worker processes: wait on the file lock
        kwargs["connect_args"] = {"timeout": 120}
    # Optuna str.format()s the URL ({SCHEMA_VERSION}): a brace of a password stays itself
    template = storage.replace("{", "{{").replace("}", "}}")
    from optuna.storages._rdb import models

    for attempt in range(_CREATE_TRIES):
        try:  # another program's tables: refused before Optuna adds its own to them
            try:
                check_schema(storage, models.BaseModel.metadata, "Optuna's records")
            except StorageError:
                raise
            except Exception:  # noqa: BLE001 - unreachable, no driver: Optuna says so below
                pass
            return optuna.storages.RDBStorage(template, engine_kwargs=kwargs, **storage_kwargs)
        except Exception as exc:  # unreachable server, bad URL, missing driver
            if attempt + 1 < _CREATE_TRIES and creation_race(exc):
                time.sleep(0.2 * (attempt + 1))  # another worker is creating the schema
                continue
            if isinstance(exc, StorageError):
                raise
            raise StorageError(open_error(exc, storage)) from exc


def check_schema(storage: str | Any, metadata, what: str) -> None:
    """Raise :class:`StorageError` when a table of ``metadata`` exists in ``storage`` (a URL or
    an engine) without the columns ``metadata`` gives it: a database of another program (or of
    an incompatible version), refused with one line instead of a failed INSERT later."""
    import sqlalchemy as sa

    engine = sa.create_engine(storage) if isinstance(storage, str) else storage
    try:
        inspector = sa.inspect(engine)
        have = set(inspector.get_table_names())
        for table in metadata.sorted_tables:
            if table.name not in have:
                continue
            cols = {c["name"] for c in inspector.get_columns(table.name)}
            missing = [c.name for c in table.columns if c.name not in cols]
            if missing:
                url = (
                    redact(storage)
                    if isinstance(storage, str)
                    else redact(engine.url.render_as_string(hide_password=True))
                )
                raise StorageError(
                    f"storage {url!r} holds a table {table.name!r} without the columns of "
                    f"{what} (no {', '.join(missing[:3])}): a database of another program? "
                    "Give --results a new folder or --storage another database, or move it "
                    "away"
                )
    finally:
        if isinstance(storage, str):
            engine.dispose()


#: Tries at opening a storage while other workers create its tables (a fresh database).
_CREATE_TRIES = 8


def creation_race(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a CREATE (or the schema version row) that a
    concurrent worker made first: ``CREATE TABLE IF NOT EXISTS`` is not atomic across
    sessions on PostgreSQL, and SQLite reports the same race as a unique constraint."""
    text = str(exc)
    return type(exc).__name__ in ("IntegrityError", "ProgrammingError", "OperationalError") and any(
        s in text for s in ("already exists", "duplicate key", "UNIQUE constraint failed")
    )


class StorageError(RuntimeError):
    """The records' storage URL cannot be used (unreachable server, bad URL, missing driver)."""


#: Seconds a worker keeps retrying a storage operation through an outage before it gives up
#: (environment variable ``OTRANSFER_STORAGE_RETRY``; default 5 minutes).
RETRY_ENV = "OTRANSFER_STORAGE_RETRY"
RETRY_DEFAULT = 300.0


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the storage being away for a while (connection refused or lost, a
    server restarting, a locked or full file): worth retrying, unlike a wrong URL or schema."""
    try:
        import sqlalchemy.exc as sa
    except ImportError:  # pragma: no cover - optuna brings SQLAlchemy
        return False
    try:
        from optuna.exceptions import StorageInternalError
    except ImportError:  # pragma: no cover
        StorageInternalError = ()  # noqa: N806
    if isinstance(
        exc, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError, StorageInternalError)
    ):
        return True
    return isinstance(exc, sa.DBAPIError) and bool(getattr(exc, "connection_invalidated", False))


def retry_budget() -> float:
    """Seconds of ``OTRANSFER_STORAGE_RETRY`` (default 5 minutes); StorageError naming the
    variable when it is not a number of seconds >= 0."""
    text = os.environ.get(RETRY_ENV, "").strip()
    try:
        value = float(text) if text else RETRY_DEFAULT
    except ValueError:
        value = float("nan")
    if not value >= 0:  # not a number, NaN or negative
        raise StorageError(
            f"{RETRY_ENV}={text!r} is not a number of seconds >= 0 (how long a "
            f"worker retries a storage that is away; default {RETRY_DEFAULT:g})"
        )
    return value


def retrying(
    fn,
    what: str,
    storage: str,
    budget: float | None = None,
    *,
    sleep=time.sleep,
    clock=time.monotonic,
    say=None,
):
    """``fn()``, retried with exponential backoff (0.5 s doubling to 30 s) while it raises a
    :func:`transient` storage error, for at most ``budget`` seconds (``OTRANSFER_STORAGE_RETRY``
    or 5 minutes); then :class:`StorageError`, one line naming the storage and what was being
    done. Other errors pass through at once."""
    from harness.training.safe_io import is_disk_full

    if budget is None:
        budget = retry_budget()
    start, wait, tries = clock(), 0.5, 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not transient(exc):
                raise
            if is_disk_full(exc):  # not an outage: waiting frees no space
                raise StorageError(
                    f"disk full: storage {redact(storage)!r} cannot be written "
                    f"while {what} (free some space, then run again; finished "
                    "records are kept)"
                ) from None
            tries += 1
            left = budget - (clock() - start)
            first = scrub((str(exc).strip().splitlines() or [""])[0], storage)[:200]
            if left <= 0:
                raise StorageError(
                    f"storage {redact(storage)!r} unreachable for "
                    f"{clock() - start:.0f} s while {what} ({tries} tries; "
                    f"{type(exc).__name__}: {first})"
                ) from None
            if say is not None and tries == 1:
                say(
                    f"storage unreachable while {what} ({type(exc).__name__}); retrying for up "
                    f"to {budget:.0f} s"
                )
            sleep(min(wait, max(left, 0.0)))
            wait = min(2 * wait, 30.0)


def check_storage(storage: str) -> None:
    """Raise :class:`StorageError` naming the problem when ``storage`` cannot be opened."""
    _rdb(storage)


def open_study(storage: str, suite: str):
    """The study of ``suite`` in ``storage`` (made when missing). A database that cannot hold
    it (another program's tables, a damaged file, a full disk) is one line:
    :class:`StorageError`."""
    import optuna

    from harness.training.safe_io import is_disk_full

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(
            study_name=suite, storage=_rdb(storage), direction="maximize", load_if_exists=True
        )
    except StorageError:
        raise
    except Exception as exc:
        if not (
            type(exc).__name__
            in ("StorageInternalError", "DatabaseError", "IntegrityError", "ProgrammingError")
            or is_disk_full(exc)
        ):
            raise
        cause = exc.__cause__ or exc
        first = (str(cause).strip().splitlines() or [""])[0][:160]
        what = (
            "the disk is full"
            if is_disk_full(exc)
            else "not an otransfer (Optuna) database, or a damaged one"
        )
        raise StorageError(
            f"storage {redact(storage)!r} cannot hold the records of suite "
            f"{suite!r} ({what}: {type(cause).__name__}: {first}); give --storage "
            "another database, or move that file away"
        ) from None


@functools.lru_cache(maxsize=1)
@functools.cache
def git_sha() -> str:
    """The repository's HEAD commit, or ``"unknown"`` outside a git checkout: read once per
    process (the commit of the code it loaded; one ``git`` process per record before)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _completed_trials(study):
    import optuna

    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("status") == "completed"
    ]


def done_keys(storage: str, suite: str) -> set[str]:
    """Keys of the jobs of ``suite`` completed in ``storage``."""
    return {t.user_attrs["key"] for t in _completed_trials(open_study(storage, suite))}


def done_artefacts(storage: str, suite: str) -> dict[str, dict[str, Any]]:
    """``{key: {artefact, artefact_bytes, artefact_sha256}}`` of every job of ``suite``
    completed in ``storage`` (its first completed record; None where it kept no weights): how
    a student finds and verifies its teacher's weights, wherever they were written. Of a key
    recorded twice (before issue 20), the latest record: the weights written last."""
    out: dict[str, dict[str, Any]] = {}
    for t in sorted(_completed_trials(open_study(storage, suite)), key=lambda t: t.number):
        out[t.user_attrs["key"]] = {k: t.user_attrs.get(k) for k in ARTEFACT_KEYS}
    return out


def _fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


#: a completed job's metrics (runner._metrics, layer traces, a teacher's weights): a check each
_METRIC_CHECKS = {
    "status": lambda v: v == "completed",
    "reason": lambda v: v is None or isinstance(v, str),
    "test_accuracy": _fraction,
    "val_accuracy": lambda v: v is None or _fraction(v),
    "best_val_accuracy": lambda v: v is None or _fraction(v),
    "wall_time": lambda v: _number(v) and 0.0 <= v < float("inf"),
    "epochs_completed": _count,
    "resumed_from_epoch": lambda v: v is None or _count(v),
    "final_losses": lambda v: (
        isinstance(v, dict)
        and all(isinstance(k, str) and isinstance(x, (int, float)) for k, x in v.items())
    ),
    "epochs": lambda v: (
        isinstance(v, list)
        and all(
            isinstance(e, dict)
            and all(isinstance(k, str) and isinstance(x, (int, float)) for k, x in e.items())
            for e in v
        )
    ),
    "layer_traces": lambda v: (
        isinstance(v, dict) and all(isinstance(k, str) and _fraction(x) for k, x in v.items())
    ),
    "artefact": lambda v: isinstance(v, str) and len(v) < 4096,
    "artefact_bytes": _count,
    "artefact_sha256": lambda v: (
        isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)
    ),
}
_METRICS_NEEDED = ("status", "test_accuracy", "wall_time")


def check_metrics(metrics: Any) -> str | None:
    """Why ``metrics`` are not a completed job's (a missing or unknown key, an accuracy that is
    not a number in [0, 1], a negative time ...), or None."""
    if not isinstance(metrics, dict):
        return "its metrics are not a mapping"
    missing = [k for k in _METRICS_NEEDED if k not in metrics]
    unknown = sorted(set(metrics) - set(_METRIC_CHECKS))
    bad = [k for k, check in _METRIC_CHECKS.items() if k in metrics and not check(metrics[k])]
    if missing or unknown or bad:
        return (
            "its metrics are not a completed job's ("
            + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"unknown {', '.join(unknown[:5])}"] if unknown else [])
                + ([f"bad {', '.join(bad)}"] if bad else [])
            )
            + ")"
        )
    return None


def start_record(study, job, extra: Mapping[str, Any] | None = None):
    """Create the trial of ``job`` (state RUNNING) with its config, key, stage and git SHA.

    The trial is created with its attributes in one storage transaction, not ``ask()`` and
    one ``set_user_attr`` transaction per attribute (scripts/reliability.py claim-path): on
    an RDB storage the trial row as Optuna's ``create_new_trial`` makes it, under the same
    study lock, and its attributes in one statement (:func:`_upsert_attrs`); elsewhere
    Optuna's ``create_new_trial`` with a template trial."""
    import datetime

    import optuna

    attrs = {
        "key": job.key,
        "stage": job.stage,
        "config": job.config_json(),
        "git_sha": git_sha(),
        "dataset": job.dataset,
        "regularizer": job.regularizer,
        "method": job.label or job.regularizer,
        "table": job.table or job.stage,
        "row": job.row or job.label or job.regularizer,
        "select": job.select,
        "task": job.task or job.dataset,
        "report": bool(job.report),
        "reference": dict(job.reference) if job.reference else None,
        "seed": job.seed,
        **(extra or {}),
    }
    user_attrs = {k: jsonable(v) for k, v in attrs.items()}
    parts = _rdb_parts(study)
    template = optuna.trial.FrozenTrial(
        number=-1,
        state=optuna.trial.TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={} if parts else user_attrs,
        system_attrs={},
        intermediate_values={},
        trial_id=-1,
    )
    if parts is None:  # another storage: Optuna's own call
        trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
        return optuna.trial.Trial(study, trial_id)
    rdb, models, scoped = parts
    with scoped(rdb.scoped_session) as s:  # as Optuna's _create_new_trial, attributes at once
        models.StudyModel.find_or_raise_by_id(study._study_id, s, for_update=True)
        trial = rdb._get_prepared_new_trial(study._study_id, template, s)
        s.flush()
        started = Started(trial.trial_id, trial.number)
        _upsert_attrs(s, rdb, models, started._trial_id, user_attrs)  # a new RUNNING trial
    return started


@dataclasses.dataclass(frozen=True)
class Started:
    """A record started on an RDB storage: what :func:`finish_record` needs of its trial
    (an ``optuna.trial.Trial`` would read the whole trial back)."""

    _trial_id: int
    number: int


def _rdb_parts(study):
    """``(backend, models, scoped session)`` of an RDB storage whose Optuna has the private
    parts used here, else None (then only Optuna's public calls are used)."""
    rdb = getattr(study._storage, "_backend", study._storage)
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        for need in (
            "scoped_session",
            "engine",
            "_get_prepared_new_trial",
            "_set_trial_value_without_commit",
        ):
            getattr(rdb, need)
        for need in ("TrialUserAttributeModel", "StudyModel", "TrialModel"):
            getattr(models, need)
    except (ImportError, AttributeError):
        return None
    return rdb, models, _create_scoped_session


def _upsert_attrs(session, rdb, models, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Write the user attributes ``attrs`` of a running trial (the caller checked that it
    is) in ``session``: one
    ``INSERT .. ON CONFLICT DO UPDATE`` of all rows on SQLite (>= 3.24) and PostgreSQL,
    where Optuna's writer issues a SELECT and an upsert per attribute (56 statements a
    record: scripts/record_bench.py); Optuna's writer, one attribute at a time, elsewhere."""
    import sqlite3

    if not attrs:
        return
    name = rdb.engine.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
        from sqlalchemy.dialects.sqlite import insert
    else:
        for k, v in attrs.items():
            rdb._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial_id, k, v
            )
        return
    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    stmt = insert(models.TrialUserAttributeModel).values(rows)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["trial_id", "key"], set_={"value_json": stmt.excluded.value_json}
        )
    )


def _running(session, rdb, models, trial_id: int):
    """The trial's row, locked for the update; Optuna's error when it is finished."""
    trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
    rdb.check_trial_is_updatable(trial_id, trial.state)
    return trial


def _set_user_attrs(study, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` on a running trial: in one transaction on an RDB storage (Optuna has no
    public call for several attributes at once), else one public ``set_trial_user_attr``
    each."""
    parts = _rdb_parts(study)
    if parts is None:
        for k, v in attrs.items():
            study._storage.set_trial_user_attr(trial_id, k, v)
        return
    rdb, models, scoped = parts
    with scoped(rdb.scoped_session) as s:
        _running(s, rdb, models, trial_id)
        _upsert_attrs(s, rdb, models, trial_id, attrs)


def finish_record(study, trial, metrics: Mapping[str, Any]) -> None:
    """Store ``metrics`` on ``trial`` and finish it: COMPLETE when ``metrics['status']`` is
    ``"completed"`` with a finite test accuracy (the trial's value), FAIL otherwise.

    On an RDB storage the metrics, the value and the state are written in one transaction
    (what ``study.tell`` writes, without its reads: a record is whole or still RUNNING);
    elsewhere the metrics one by one, then ``study.tell``."""
    import datetime
    import math

    import optuna

    attrs = {k: jsonable(v) for k, v in metrics.items()}
    value = metrics.get("test_accuracy")
    ok = metrics.get("status") == "completed" and value is not None
    ok = ok and math.isfinite(float(value))
    state = optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL
    parts = _rdb_parts(study)
    if parts is None:
        _set_user_attrs(study, trial._trial_id, attrs)
        study.tell(trial, float(value)) if ok else study.tell(trial, state=state)
        return
    rdb, models, scoped = parts
    with scoped(rdb.scoped_session) as s:
        row = _running(s, rdb, models, trial._trial_id)
        _upsert_attrs(s, rdb, models, trial._trial_id, attrs)
        if ok:
            rdb._set_trial_value_without_commit(s, row, 0, float(value))
        row.state = state
        row.datetime_complete = datetime.datetime.now()


def fail_orphans(study, key: str, worker: str, reason: str = "worker lost") -> int:
    """Mark FAIL the RUNNING trials of ``key`` left by ``worker`` (killed mid-job): the record
    says what happened, and nothing else changes. Returns how many."""
    import optuna

    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("key") == key and t.user_attrs.get("worker") == worker:
            study._storage.set_trial_user_attr(t._trial_id, "status", "failed")
            study._storage.set_trial_user_attr(t._trial_id, "reason", reason)
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            n += 1
    return n


def jsonable(v):
    return json.loads(json.dumps(v, default=float))


def records_frame(storage: str, suite: str):
    """One row per completed job (the latest record of each key): key, stage, dataset,
    regularizer, method (spec + grid point), seed, metrics, ``config`` (dict) and ``git_sha``."""
    import pandas as pd

    rows = {}
    for t in sorted(_completed_trials(open_study(storage, suite)), key=lambda t: t.number):
        a = dict(t.user_attrs)
        a["config"] = json.loads(a["config"])
        a["trial"] = t.number
        rows[a["key"]] = a
    cols = [
        "key",
        "stage",
        "table",
        "task",
        "report",
        "dataset",
        "regularizer",
        "method",
        "seed",
        "val_accuracy",
        "best_val_accuracy",
        "test_accuracy",
        "wall_time",
        "final_losses",
        "epochs",
        "layer_traces",
        "status",
        "git_sha",
        "trial",
        "config",
    ]
    df = pd.DataFrame(list(rows.values()))
    for c in cols:
        if c not in df:
            df[c] = pd.Series(dtype=object)
    return df[cols + [c for c in df.columns if c not in cols]].reset_index(drop=True)
