"""How many CPU threads a training job may use: workers x threads <= the cores it may use.

torch's default is one intra-op thread per core of the machine, in every process. With several
workers (``run --workers N``), on a shared machine or on a SLURM node that gave the job fewer
cores than it has, every small op then waits at a barrier for threads that are not scheduled:
the same 3-epoch Omega_P job took 12.4-14.4 s with 2 threads against 6.4-7.8 s with 1 on a
loaded 2-core machine. The policy here:

* the cores this process may use: its CPU affinity (``os.sched_getaffinity``), capped by a
  cgroup CPU quota (``/sys/fs/cgroup/cpu.max``) and by SLURM's ``SLURM_CPUS_PER_TASK``;
* shared among the workers started together on this machine (``OTRANSFER_WORKERS``, set by
  ``run --workers N`` for its children);
* one thread for a small model (below :data:`SMALL_MODEL` parameters, every CPU twin's models):
  its ops are too small for threads to pay for their synchronisation;
* an explicit choice wins: ``--threads N`` / ``OTRANSFER_THREADS=N``, or ``OMP_NUM_THREADS``
  set by the user.

torch's intra-op threads and the BLAS pools of NumPy/SciPy (``threadpoolctl``) are both set.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping

__all__ = [
    "SMALL_MODEL",
    "THREADS_ENV",
    "WORKERS_ENV",
    "cpu_budget",
    "choose_threads",
    "apply_threads",
]

#: parameters below which a model trains on one thread by default
SMALL_MODEL = 2_000_000
THREADS_ENV = "OTRANSFER_THREADS"
WORKERS_ENV = "OTRANSFER_WORKERS"


def _cgroup_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """Cores granted by a cgroup v2 CPU quota (``"max 100000"`` is none)."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.floor(int(quota) / int(period)))


def cpu_budget(environ: Mapping[str, str] | None = None) -> int:
    """The cores this process may use (affinity, cgroup quota, SLURM's cpus per task)."""
    env = os.environ if environ is None else environ
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limits = [cores, _cgroup_quota()]
    slurm = env.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        limits.append(int(slurm))
    return max(1, min(v for v in limits if v is not None))


def _explicit(env: Mapping[str, str]) -> int | None:
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = env.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(
                    f"{name}={value!r} must be a positive integer number of threads (e.g. {name}=1)"
                )
            return int(value)
    return None


def choose_threads(
    n_params: int, *, threads: int | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """Intra-op threads for a job training a model of ``n_params`` parameters."""
    env = os.environ if environ is None else environ
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer; got {threads!r}")
        return threads
    explicit = _explicit(env)
    if explicit is not None:
        return explicit
    if n_params < SMALL_MODEL:
        return 1
    workers = env.get(WORKERS_ENV, "1")
    workers = int(workers) if workers.isdigit() and int(workers) > 0 else 1
    return max(1, cpu_budget(env) // workers)


def apply_threads(n_params: int, *, threads: int | None = None) -> int:
    """Set torch's and the BLAS pools' threads for this job; return the number chosen."""
    import torch

    n = choose_threads(n_params, threads=threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it BLAS keeps its default
        return n
    threadpool_limits(limits=n)
    return n
