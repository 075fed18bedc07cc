"""The confirmatory run of a register (issue 22, item 5): its ``confirmatory:`` block.

A register file (``claims/<paper>.yaml``) ends with the plan of its confirmatory run, fixed
before the run starts: the primary test and level, the power calculation it came from, and per
CPU twin the fresh seeds (none of them used by an exploratory run), the fixed test pool and
any suite override decided on the exploratory seeds (a widened grid). ``otransfer confirm``
(:mod:`harness.experiments.confirm`) runs exactly that, at one commit, into
``results/confirmatory/<suite>/``.

A block may add later ``rounds:`` of the same plan (:class:`Round`): every run again, with its
seed count, overrides and test unchanged, on fresh seeds from the round's ``first_seed`` (above
every seed of the earlier rounds), all suites at one commit and, where the round says so, with
one kind of CPU kernels (torch's ``ATEN_CPU_CAPABILITY``), into
``results/confirmatory-round<N>/<suite>/``.

:class:`Confirmatory` is the block's schema (pydantic, strict); :func:`run_overrides` turns a
run into the ``--set`` strings of ``otransfer run``; :func:`check_fresh` refuses a seed that
the suite's exploratory runs used.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "FIRST_FRESH_SEED",
    "Seeds",
    "ConfirmRun",
    "Confirmatory",
    "Round",
    "in_round",
    "run_overrides",
    "check_fresh",
]

#: Confirmatory seeds start here: every exploratory run used seeds below it.
FIRST_FRESH_SEED = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Seeds(_Strict):
    """``first``, ``first + 1``, ..., ``first + count - 1``."""

    first: int = Field(ge=FIRST_FRESH_SEED)
    count: int = Field(ge=2, le=500)

    def values(self) -> list[int]:
        return list(range(self.first, self.first + self.count))


class ConfirmRun(_Strict):
    """One CPU twin of the confirmatory run.

    ``seeds``: the fresh seeds (their number from the power calculation); ``test_pool``: always
    ``fixed`` (no seed trains on a test example, so the sign-flip test is valid);
    ``set``: suite overrides decided on the exploratory seeds (``{dotted key: value}``, as
    ``otransfer run --set``), each explained in ``why``."""

    suite: str = Field(min_length=1)
    seeds: Seeds
    test_pool: Literal["fixed"] = "fixed"
    set: dict[str, Any] = {}
    why: str = Field(min_length=1)

    @field_validator("set")
    @classmethod
    def _no_seed_override(cls, v):
        bad = [k for k in v if k in ("seeds", "test_pool")]
        if bad:
            raise ValueError(f"{bad[0]!r} is given by the run's own field, not by 'set'")
        return v


class Round(_Strict):
    """A later round of the block's plan (round 1 is the block's own ``runs``).

    ``number``: 2, 3, ...; ``first_seed``: the round's seeds are ``first_seed`` ..
    ``first_seed + count - 1`` for each run's own ``count``; ``cpu_capability``: the CPU
    kernels torch must use (``torch.backends.cpu.get_cpu_capability()``; set with
    ``ATEN_CPU_CAPABILITY``), so that the round reproduces bit for bit on another machine;
    ``why``: why the round exists, decided before any of its seeds is drawn."""

    number: int = Field(ge=2)
    decided: datetime.date
    first_seed: int = Field(ge=FIRST_FRESH_SEED)
    cpu_capability: Literal["DEFAULT", "AVX2", "AVX512"] | None = None
    why: str = Field(min_length=1)


class Confirmatory(_Strict):
    """The ``confirmatory:`` block of a register file."""

    decided: datetime.date
    primary_test: str = Field(min_length=1)
    level: float = Field(gt=0, lt=1)
    correction: Literal["holm"]
    power: str = Field(min_length=1)
    runs: list[ConfirmRun] = Field(min_length=1)
    rounds: list[Round] = []

    @model_validator(mode="after")
    def _one_run_per_suite(self):
        seen = set()
        for r in self.runs:
            if r.suite in seen:
                raise ValueError(f"suite {r.suite!r} has two runs; one run per suite")
            seen.add(r.suite)
        return self

    @model_validator(mode="after")
    def _rounds_in_order_on_fresh_seeds(self):
        last = max(r.seeds.first + r.seeds.count - 1 for r in self.runs)
        width = max(r.seeds.count for r in self.runs)
        for i, rnd in enumerate(self.rounds):
            if rnd.number != i + 2:
                raise ValueError(f"round {rnd.number} is listed where round {i + 2} belongs")
            if rnd.first_seed <= last:
                raise ValueError(
                    f"round {rnd.number} starts at seed {rnd.first_seed}, which an earlier "
                    f"round uses; start it above {last}"
                )
            last = rnd.first_seed + width - 1
        return self

    def round(self, number: int) -> Round | None:
        """Round ``number`` (None for round 1, the block's own runs); ValueError if absent."""
        if number == 1:
            return None
        for rnd in self.rounds:
            if rnd.number == number:
                return rnd
        raise ValueError(f"no round {number}")


def in_round(run: ConfirmRun, rnd: Round | None) -> ConfirmRun:
    """``run`` as round ``rnd`` runs it: the same count, overrides and test, the round's
    seeds (``run`` itself for round 1)."""
    if rnd is None:
        return run
    seeds = Seeds(first=rnd.first_seed, count=run.seeds.count)
    return run.model_copy(update={"seeds": seeds})


def run_overrides(run: ConfirmRun) -> list[str]:
    """The ``otransfer run --set`` strings of ``run``: its seeds, the fixed test pool, then its
    own overrides (values as JSON, which YAML reads back unchanged)."""
    return [
        f"seeds={json.dumps(run.seeds.values())}",
        f"test_pool={run.test_pool}",
        *(f"{k}={json.dumps(v)}" for k, v in run.set.items()),
    ]


def check_fresh(run: ConfirmRun, exploratory_seeds: Sequence[int]) -> str | None:
    """A one-line problem when ``run`` reuses a seed of the suite's exploratory runs."""
    used = sorted(set(run.seeds.values()) & {int(s) for s in exploratory_seeds})
    if used:
        return (
            f"{run.suite}: seed {used[0]} of the confirmatory run was used by an "
            f"exploratory run; start the confirmatory seeds above {max(exploratory_seeds)}"
        )
    return None


def plans(
    regs: Mapping[str, Any], number: int = 1
) -> dict[str, tuple[str, Confirmatory, ConfirmRun]]:
    """``{suite: (paper, block, run)}`` of every register with a confirmatory block, each run
    as round ``number`` runs it; ValueError naming the register that lacks the round."""
    out: dict[str, tuple[str, Confirmatory, ConfirmRun]] = {}
    for paper, reg in regs.items():
        block = getattr(reg, "confirmatory", None)
        try:
            rnd = block.round(number) if block is not None else None
        except ValueError:
            raise ValueError(
                f"claims/{paper}.yaml plans no round {number} (its confirmatory block's "
                "rounds:); add it there before running the round"
            ) from None
        for run in block.runs if block is not None else ():
            run = in_round(run, rnd)
            if run.suite in out:
                raise ValueError(
                    f"suite {run.suite!r} is in the confirmatory blocks of "
                    f"{out[run.suite][0]} and {paper}; one register runs it"
                )
            out[run.suite] = (paper, block, run)
    return out


def check_block(reg, suites: set[str] | None) -> list[str]:
    """Problems of ``reg``'s confirmatory block, one line each: a suite that does not exist or
    does not load with the run's overrides, a seed an exploratory run used."""
    from harness.experiments.suite import SuiteError, expand, load_suite

    block = getattr(reg, "confirmatory", None)
    out = []
    for run in block.runs if block is not None and suites is not None else ():
        if run.suite not in suites:
            out.append(f"confirmatory: no suite {run.suite!r} in suites/")
            continue
        try:
            base = load_suite(run.suite)
            jobs = expand(load_suite(run.suite, run_overrides(run)))
        except (SuiteError, ValueError) as exc:
            out.append(f"confirmatory: {run.suite} does not load with its overrides: {exc}")
            continue
        for rnd in [None, *block.rounds]:
            problem = check_fresh(in_round(run, rnd), base.seeds)
            if problem:
                out.append(f"confirmatory: {problem}")
        if not jobs:
            out.append(f"confirmatory: {run.suite} expands to no job")
    return out
