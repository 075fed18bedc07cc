"""The files a report reads back and writes (the reports' bottom layer): CSVs of at most
:data:`CSV_LIMIT` bytes read from regular files only, and CSVs and figures written atomically,
never through a link (:mod:`harness.training.safe_io`)."""

from __future__ import annotations

from harness.training import safe_io

__all__ = ["CSV_LIMIT", "read_csv", "write_csv", "save_figure", "page_command"]

#: a CSV read back from a results folder larger than this is not one a report wrote
CSV_LIMIT = 256 * 2**20


def read_csv(path, **kw):
    """``pd.read_csv`` of a regular file of at most :data:`CSV_LIMIT` bytes (a FIFO or a
    device planted there is one line, :class:`~harness.training.safe_io.UnsafePathError`)."""
    import io

    import pandas as pd

    return pd.read_csv(io.BytesIO(safe_io.read_bytes(path, limit=CSV_LIMIT)), **kw)


def write_csv(frame, path, root=None, **kw) -> None:
    """``frame.to_csv`` written atomically, never through a link."""
    safe_io.write_text(path, frame.to_csv(**kw), root)


def save_figure(fig, path) -> None:
    """A matplotlib figure laid out tight, written atomically at 120 dpi, then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    safe_io.write_figure(fig, path, dpi=120)
    plt.close(fig)


def page_command(argv, page, text, command: str, description: str) -> int:
    """The command line of a script that writes a generated docs page: ``page`` (a path)
    rewritten with ``text()``, or with ``--check`` exit 1 when it differs (the tests' check
    that the page is up to date; ``command`` is how to regenerate it)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--check", action="store_true", help="fail when the page is out of date")
    args = ap.parse_args(argv)
    body = text()
    if args.check:
        if (page.read_text() if page.exists() else "") != body:
            print(f"{page} is out of date: run {command}", file=sys.stderr)
            return 1
        return 0
    page.write_text(body)
    print(f"wrote {page}")
    return 0
