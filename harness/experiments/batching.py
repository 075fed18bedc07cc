"""Jobs of a suite that differ only in seed (and regularizer weights) trained as one batch.

When the runner is about to train a job, :class:`SeedBatches` looks for its *siblings*: the
jobs of the same stage, dataset, model, train settings and regularizer spec that differ only in
their seed (so in their teacher / init job of that seed) and regularizer parameters (a grid's
alpha, KD's tau), not yet finished, whose teacher and init weights are there. It trains them
together with :func:`harness.training.batched.train_batched` and keeps the siblings' metrics;
each sibling is claimed before the batch trains (so that no other worker trains it too; one
another worker holds is left out), then recorded and reported as its own job, the runner's next
(one record per job, the keys of :func:`harness.experiments.runner.run_job`'s metrics). A
sibling whose claim another worker took over meanwhile is not recorded from here.

Not batched, trained one at a time as before (the runner says which and why, once per group):
teacher / init jobs (their weights file is written by ``run_job``), jobs with ``analysis``, a
job with a checkpoint to resume from, and every job :func:`why_not_batchable` refuses (batch
norm, dropout, joint training, layer-wise rates, learned embeddings, torchrun).
``otransfer run --no-batch`` (``run_suite(batch=False)``, or the environment variable
``OTRANSFER_NO_BATCH=1``) turns batching off.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Mapping

from harness.experiments.suite import PRETRAINED, Job

__all__ = ["SeedBatches", "group_key", "MAX_MEMBERS", "NO_BATCH_ENV"]

#: set to 1 (``otransfer run --no-batch`` does, for the workers it spawns too): no batching
NO_BATCH_ENV = "OTRANSFER_NO_BATCH"

#: most models trained in one batch (memory grows with it; beyond ~64 the speed-up flattens)
MAX_MEMBERS = 64


def group_key(job: Job) -> str:
    """What siblings share: the job's config without its seed, its seed's teacher / init jobs
    and its regularizer's parameters (the spec itself stays)."""
    cfg = {
        k: v
        for k, v in job.config.items()
        if k not in ("seed", "teacher", "init", "regularizer_params")
    }
    cfg["train"] = {k: v for k, v in job.config["train"].items() if k != "seed"}
    return json.dumps(cfg, sort_keys=True, default=str)


def _deps(job: Job) -> list[str]:
    """Keys of the jobs whose weights ``job`` loads (its teacher and init stages)."""
    return [
        job.config[r]
        for r in ("teacher", "init")
        if job.config.get(r) and job.config[r] != PRETRAINED
    ]


class SeedBatches:
    """The batching strategy of one :class:`harness.experiments.runner._SuiteRun` (``run``):
    :meth:`metrics` returns a job's metrics from its batch, training the batch when needed."""

    def __init__(
        self,
        run,
        job_inputs: Callable,
        train_config: Callable,
        result_metrics: Callable,
        enabled: bool = True,
    ):
        """``run``: the suite run; the other three are :mod:`harness.experiments.runner`'s
        ``job_inputs``, ``_train_config`` and ``_metrics`` (passed in: no import circle)."""
        self.run = run
        self.job_inputs, self.train_config = job_inputs, train_config
        self.result_metrics = result_metrics
        self.enabled = enabled and os.environ.get(NO_BATCH_ENV, "") in ("", "0")
        self.done: dict[str, Mapping[str, Any]] = {}  # sibling key -> metrics not yet recorded
        self.refused: dict[str, str] = {}  # group key -> why it is not batched

    def metrics(self, job: Job, single: Callable[[], Mapping[str, Any]]) -> Mapping[str, Any]:
        """``job``'s metrics: from a batch trained earlier, from a new batch of its siblings,
        or ``single()`` (``run_job``) when it is not batched."""
        if job.key in self.done:
            return self.done.pop(job.key)
        group = self.siblings(job) if self.enabled else []
        if len(group) < 2:
            return single()
        try:
            results = self.train(group)
        except Exception as exc:  # noqa: BLE001 - any reason: the job alone, as before
            from harness.training.batched import NotBatchable

            self.release(group[1:])  # the siblings: claimed again when the runner reaches them
            why = str(exc) if isinstance(exc, NotBatchable) else f"{type(exc).__name__}: {exc}"
            self.refused[group_key(job)] = why
            self.run.say(f"{job.stage} {job.regularizer}: one model at a time ({why})")
            return single()
        except BaseException:  # Ctrl-C, SIGTERM: another worker (or resume) takes them at once
            self.release(group[1:])
            raise
        self.done.update({j.key: m for j, m in zip(group[1:], results[1:], strict=True)})
        return results[0]

    def siblings(self, job: Job) -> list[Job]:
        """``job`` and its unfinished siblings whose weights are there (``job`` first)."""
        run = self.run
        key = group_key(job)
        if key in self.refused or job.key in run.teacher_keys or job.config.get("analysis"):
            return []

        def ready(j: Job) -> bool:
            return (
                not run.finished(j.key)
                and j.key not in run.tried
                and j.key not in self.done
                and group_key(j) == key
                and not (run.artefacts / f"{j.key}.ckpt").exists()
                and all(self.weights_there(d) for d in _deps(j))
            )

        if not ready(job):
            return []
        others = [j for j in run.jobs if j.key != job.key and ready(j)]
        return [job, *self.claim(others, MAX_MEMBERS - 1)]

    def claim(self, jobs: list[Job], most: int) -> list[Job]:
        """Up to ``most`` of ``jobs``, each now claimed by this worker as the runner claims a
        job (``run.claim_sibling``), so that no other worker trains it meanwhile; a sibling
        another worker holds, or that turned out done, is left to it."""
        got = []
        for j in jobs:
            if len(got) == most:
                break
            if self.run.claim_sibling(j):
                got.append(j)
        return got

    def release(self, jobs: list[Job]) -> None:
        """Give back the claims of siblings whose batch did not train."""
        if self.run.claims is not None:
            for j in jobs:
                self.run.claims.release(j.key)

    def weights_there(self, key: str) -> bool:
        """A teacher / init job's weights are there: finished in this run, or a job outside
        it (``run_suite(jobs=...)``) whose weights file exists, as the runner's ``pick``
        accepts."""
        run = self.run
        return run.finished(key) or (
            key not in run.number and (run.artefacts / f"{key}.pt").is_file()
        )

    def train(self, group: list[Job]) -> list[dict[str, Any]]:
        """Train ``group`` as one batched model; each job's metrics, as ``run_job`` gives."""
        from harness.training.batched import Member, train_batched

        run = self.run
        members = []
        for j in group:
            (train_set, val_set, test_set, model, w0, teacher, source_set, reg, label_cost) = (
                self.job_inputs(
                    j, (run.by_key, run.artefacts, run.dep_records(j)), threads=run.threads
                )
            )
            if source_set is not None or label_cost is not None:
                from harness.training.batched import NotBatchable

                raise NotBatchable("joint training (a source task)")
            members.append(
                Member(
                    model,
                    train_set,
                    val_set,
                    test_set,
                    self.train_config(j.config, run.device),
                    reg,
                    teacher,
                    w0,
                )
            )
        t0 = time.perf_counter()
        results = train_batched(members)
        run.say(
            f"{group[0].stage} {group[0].regularizer}: {len(group)} jobs (seeds "
            f"{sorted({j.seed for j in group})}) trained as one batched model in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        return [self.result_metrics(r) for r in results]
