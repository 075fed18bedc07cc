"""What every ``otransfer`` subcommand shares: its parser class (``--debug`` on each), the
flags several subcommands take (defined once here, given to a subcommand as argparse
``parents=``), the one-line error and the method-name helpers."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

# every URL and error line shown goes through this: no secret of the storage URL printed
from harness.experiments.secrets import scrub

__all__ = ["Parser", "flags", "fail", "method_names", "validate_methods", "DEBUG_HELP"]

DEBUG_HELP = "print the traceback of an error as well as its one line (or set OTRANSFER_DEBUG=1)"

#: The flags several subcommands share: name -> add_argument's keywords. A subcommand takes
#: them with ``parents=flags(...)``, its own help text where its meaning differs.
SHARED: dict[str, dict[str, Any]] = {
    "--storage": {"metavar": "URL"},
    "--results": {"default": "results", "metavar": "DIR"},
    "--set": {"action": "append", "metavar": "K=V"},
    "--quick": {"action": "store_true"},
    "--device": {"metavar": "DEV"},
    "--no-progress": {"action": "store_true", "help": "hide the progress bars"},
    "--workers": {"type": int, "default": 1, "metavar": "N"},
    "--stale-after": {"type": float, "default": 120.0, "metavar": "S"},
    "--heartbeat": {"type": float, "default": 10.0, "metavar": "S"},
}


def flags(**helps: str) -> list[argparse.ArgumentParser]:
    """A parent parser holding the shared flags named (``no_progress=`` for ``--no-progress``),
    each with the help text given (``""``: the shared one); for ``parents=``."""
    parent = argparse.ArgumentParser(add_help=False)
    for key, text in helps.items():
        name = "--" + key.replace("_", "-")
        spec = SHARED[name]
        parent.add_argument(name, **{**spec, "help": text or spec.get("help")})
    return [parent]


def _debug_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parent


class Parser(argparse.ArgumentParser):
    """A subcommand's parser: takes ``--debug`` after COMMAND as well as before it (its
    default is left to the top parser's). Nested subcommands are of this class too."""

    def __init__(self, *args, parents: Sequence[argparse.ArgumentParser] = (), **kwargs):
        super().__init__(*args, parents=[*parents, _debug_parent()], **kwargs)


def fail(args: argparse.Namespace, exc, what: str | None = None, line: str | None = None) -> int:
    """Print ``otransfer COMMAND: <line or exc>`` on one line (the traceback before it with
    ``--debug``), without the storage URL's secrets; return 1."""
    if getattr(args, "debug", False) and isinstance(exc, BaseException):
        from harness.experiments.errors import scrubbed_traceback

        sys.stderr.write(scrubbed_traceback(exc, getattr(args, "storage", None)))
    line = scrub(str(exc if line is None else line), getattr(args, "storage", None))
    print(f"otransfer {what or args.command}: {line}", file=sys.stderr)
    return 1


def method_names(values: Sequence[str]) -> list[str]:
    """Accept "--methods a,b c": commas and spaces both separate names."""
    return [name for v in values for name in v.split(",") if name]


def validate_methods(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """Exit with the registry's message (close matches, known methods) on an unknown name."""
    import solvers

    for name in names:
        try:
            solvers.get_method(name)
        except ValueError as exc:
            parser.error(str(exc))
