"""``python -m harness.cli ARGS``: the ``otransfer`` command (spawned workers, torchrun)."""

import sys

from harness.cli import main

sys.exit(main())
