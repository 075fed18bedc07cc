"""One regularizer group of an ``otransfer bench throughput`` slice, both ways in one process.

    OMP_NUM_THREADS=1 python scripts/throughput_group.py li2020_table4-cpu l2sp [--seeds 8]

Runs :func:`harness.reports.throughput.bench` with the slice's regularizers cut to SPEC
(comma-separated, e.g. ``l2sp`` or ``l2,omega_p``) and prints the CPU seconds of each way and
their ratio: where a slice's ratio comes from (results/throughput/throughput.md).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from harness.reports import throughput as tp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", choices=sorted(tp.SLICES))
    ap.add_argument("spec", help="regularizers of the slice to keep, comma-separated")
    ap.add_argument("--seeds", type=int, default=8)
    a = ap.parse_args()
    stage, specs, grid, train = tp.SLICES[a.suite]
    keep = a.spec.split(",")
    unknown = sorted(set(keep) - set(specs))
    if unknown:
        ap.error(f"{', '.join(unknown)} not in the slice's regularizers {', '.join(specs)}")
    tp.SLICES[a.suite] = (stage, keep, grid, train)
    with tempfile.TemporaryDirectory() as d:
        r = tp.bench(a.suite, a.seeds, Path(d))
    print(
        f"{a.suite} {a.spec}: {r['jobs']} jobs: one at a time {r['one at a time']:.2f} CPU-s, "
        f"batched {r['batched']:.2f} CPU-s, ratio {r['ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
