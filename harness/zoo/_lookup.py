"""Shared lookups for the harness's registries (models, datasets): one place for the
"unknown name -> close matches" error and for capability filtering (style.md §1-2)."""
from __future__ import annotations

import difflib
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """``registry[name]``, case-insensitively; an unknown name raises ValueError with the close
    matches and the known names."""
    key = str(name).strip()
    if key in registry:
        return registry[key]
    known = {k.lower(): k for k in registry}
    if key.lower() in known:
        return registry[known[key.lower()]]
    close = [known[c] for c in difflib.get_close_matches(key.lower(), list(known), n=3, cutoff=0.5)]
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"unknown {kind} {name!r}{hint} Known {kind}s: {', '.join(registry)}")


def matching(registry: Mapping[str, Any], flags: Mapping[str, Any]) -> list[str]:
    """Names whose entry has every attribute in ``flags`` equal to the given value."""
    return [n for n, info in registry.items() if all(getattr(info, k) == v for k, v in flags.items())]
