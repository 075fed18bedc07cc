"""The cost of one job's record: Optuna's calls against harness.experiments.records, one process.

    python scripts/record_bench.py [--jobs 200] [--rounds 3] [--storage URL]

Each round writes ``--jobs`` records of a real job (the first of ``mini``, its real attributes
and a completed job's metrics) both ways, alternating, into fresh studies of one storage
(default a temporary SQLite file; ``--storage postgresql://...`` for a server):

- **optuna**: what records.py did before (``create_new_trial`` with a template trial holding the
  attributes, ``optuna.trial.Trial``, the metrics by ``_set_trial_attr_without_commit`` in
  one session, ``study.tell``);
- **records**: ``records.start_record`` + ``records.finish_record`` as the runner calls them.

Prints CPU and wall milliseconds a record for each way (median over rounds), their ratio, and
the SQL statements and commits of one record (SQLAlchemy events).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path

METRICS = {
    "status": "completed",
    "reason": None,
    "val_accuracy": 0.91,
    "best_val_accuracy": 0.93,
    "test_accuracy": 0.9,
    "wall_time": 1.5,
    "final_losses": {"ce": 0.1, "reg": 0.02},
    "epochs": [{"epoch": e, "val_accuracy": 0.9, "loss": 0.2} for e in range(10)],
    "layer_traces": None,
    "teacher_accuracy": 0.97,
    "device": "cpu",
    "threads": 1,
    "diagnostics": {"plan_error": 1e-9, "iterations": 12},
}


def optuna_way(study, job) -> None:
    """records.py before: Optuna's template trial, then per-attribute writes and tell."""
    import optuna
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    from harness.experiments import records

    attrs = {
        "key": job.key,
        "stage": job.stage,
        "config": job.config_json(),
        "git_sha": records.git_sha(),
        "dataset": job.dataset,
        "regularizer": job.regularizer,
        "method": job.label or job.regularizer,
        "table": job.table or job.stage,
        "row": job.row or job.label or job.regularizer,
        "select": job.select,
        "task": job.task or job.dataset,
        "report": bool(job.report),
        "reference": None,
        "seed": job.seed,
        "worker": "w",
    }
    template = optuna.trial.FrozenTrial(
        number=-1,
        state=optuna.trial.TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={k: records.jsonable(v) for k, v in attrs.items()},
        system_attrs={},
        intermediate_values={},
        trial_id=-1,
    )
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    trial = optuna.trial.Trial(study, trial_id)
    rdb = study._storage._backend
    with _create_scoped_session(rdb.scoped_session, True) as s:
        for k, v in METRICS.items():
            rdb._set_trial_attr_without_commit(
                s, models.TrialUserAttributeModel, trial_id, k, records.jsonable(v)
            )
    study.tell(trial, METRICS["test_accuracy"])


def records_way(study, job) -> None:
    from harness.experiments import records

    trial = records.start_record(study, job, extra={"worker": "w"})
    records.finish_record(study, trial, METRICS)


def timed(way, study, job, n: int) -> tuple[float, float]:
    """(CPU ms, wall ms) a record over ``n`` records."""
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        way(study, job)
    return (time.process_time() - c0) / n * 1e3, (time.perf_counter() - w0) / n * 1e3


def statements(way, study, job, engine) -> tuple[int, int]:
    import sqlalchemy as sa

    seen = {"sql": 0, "commit": 0}

    def count_sql(*_a, **_k):
        seen["sql"] += 1

    def count_commit(*_a, **_k):
        seen["commit"] += 1

    sa.event.listen(engine, "before_cursor_execute", count_sql)
    sa.event.listen(engine, "commit", count_commit)
    try:
        way(study, job)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count_sql)
        sa.event.remove(engine, "commit", count_commit)
    return seen["sql"], seen["commit"]


def main() -> None:
    import optuna

    from harness.experiments import records
    from harness.experiments.suite import expand, load_suite

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--storage", default=None)
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = tempfile.mkdtemp()
    url = a.storage or f"sqlite:///{Path(tmp) / 'records.sqlite3'}"
    job = expand(load_suite("mini"))[0]
    ways = {"optuna": optuna_way, "records": records_way}
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
    for r in range(a.rounds):
        for name, way in ways.items():
            study = records.open_study(url, f"bench-{name}-{r}")
            got[name].append(timed(way, study, job, a.jobs))
    engine = records._rdb(url).engine
    print(f"{a.jobs} records x {a.rounds} rounds, {url.split(':')[0]}; median per record:")
    print("| way | CPU ms | wall ms | SQL statements | commits |")
    print("|---|---:|---:|---:|---:|")
    med = {}
    for name, way in ways.items():
        cpu = statistics.median(c for c, _ in got[name])
        wall = statistics.median(w for _, w in got[name])
        med[name] = (cpu, wall)
        sql, commits = statements(way, records.open_study(url, f"count-{name}"), job, engine)
        print(f"| {name} | {cpu:.2f} | {wall:.2f} | {sql} | {commits} |")
    (c0, w0), (c1, w1) = med["optuna"], med["records"]
    print(f"ratio optuna / records: CPU {c0 / c1:.2f}x, wall {w0 / w1:.2f}x")


if __name__ == "__main__":
    main()
