"""Kept for old notes: ``otransfer bench throughput`` is the command
(harness/reports/throughput.py).

PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/bench_throughput.py [--seeds 8] [--out F]
"""

from __future__ import annotations

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "throughput", *sys.argv[1:]]))
