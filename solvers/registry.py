"""One registry class for every kind of named component: OT methods (:mod:`solvers`),
regularizers, models, datasets; and the one "unknown name -> did you mean" helper that every
lookup of a name uses (tap names, parameters, storage drivers, search options).

It lives here, at the bottom (``solvers`` imports nothing of ``harness``; the harness imports
``solvers``), and imports nothing but the standard library::

    MODELS = Registry("model", entry_points="otransfer.models",
                      make=lambda name, fn, **caps: ModelInfo(name=name, factory=fn, **caps))

    @MODELS.register("mlp", input_kind="flat")
    def mlp(num_classes, **params): ...

    MODELS.get("MLP")            # case and surrounding blanks forgiven (exact=False)
    MODELS.get("mpl")            # ValueError: unknown model 'mpl'; did you mean 'mlp'? Known ...
    MODELS.names(input_kind="flat")
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import sys
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

__all__ = ["Registry", "close_matches", "did_you_mean", "load_entry_points"]

T = TypeVar("T")
_MISSING = object()


def close_matches(
    name: Any, known: Iterable[str], *, n: int = 3, cutoff: float = 0.5, fold_case: bool = False
) -> list[str]:
    """The names of ``known`` closest to ``name`` (difflib's ratio >= ``cutoff``), best first;
    with ``fold_case`` compared in lower case and returned in their own spelling."""
    known = list(known)
    if not fold_case:
        return difflib.get_close_matches(str(name), known, n=n, cutoff=cutoff)
    lower = {k.lower(): k for k in known}
    return [
        lower[c]
        for c in difflib.get_close_matches(str(name).lower(), list(lower), n=n, cutoff=cutoff)
    ]


def did_you_mean(name: Any, known: Iterable[str], **options: Any) -> str:
    """``"; did you mean 'a', 'b'?"`` (the close matches of :func:`close_matches`), or ``""``."""
    close = close_matches(name, known, **options)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


#: Entry-point groups already loaded in this process (each is loaded once).
_GROUPS_LOADED: set[str] = set()


def load_entry_points(group: str) -> list[str]:
    """Import every module that a Python entry point of ``group`` names (``otransfer.solvers``,
    ``otransfer.regularizers``, ``otransfer.models``, ``otransfer.datasets``), once per process:
    their imports register components with the registries' decorators. A plugin that fails to
    import is skipped with one line on standard error naming it, its package and the error.
    Returns the entry points' names loaded by this call."""
    if group in _GROUPS_LOADED:
        return []
    _GROUPS_LOADED.add(group)  # first: a plugin that looks its registry up does not recurse
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=group):
        try:
            ep.load()
            loaded.append(ep.name)
        except Exception as exc:  # a broken plugin: said in one line, the others still load
            pkg = getattr(getattr(ep, "dist", None), "name", None) or "?"
            line = " ".join(f"{type(exc).__name__}: {exc}".split())
            print(
                f"otransfer: plugin {ep.name!r} ({ep.value}, entry point group {group}, "
                f"package {pkg}) failed to import and is skipped: {line}",
                file=sys.stderr,
            )
    return loaded


def _attributes(entry: Any) -> set[str]:
    """What ``names(**flags)`` may filter on: an entry's dataclass fields and properties."""
    cls = type(entry)
    fields = (
        {f.name for f in dataclasses.fields(entry)}
        if dataclasses.is_dataclass(entry)
        else {k for k in vars(entry) if not k.startswith("_")}
        if hasattr(entry, "__dict__")
        else set()
    )
    props = {k for c in cls.__mro__ for k, v in vars(c).items() if isinstance(v, property)}
    return fields | props


class Registry(Generic[T]):
    """Named entries of one kind, each registered once, with their capabilities as data.

    Parameters
    ----------
    kind : str
        What an entry is, in messages: ``"OT method"``, ``"regularizer"``, ``"model"``.
    plural : str, optional
        The "Known ...:" list's word (default ``kind + "s"``; ``"methods"`` for solvers).
    make : callable, optional
        ``make(name, obj, **capabilities) -> entry`` (an info dataclass); default: the entry is
        ``obj`` itself (no capabilities accepted). An entry with an ``aliases`` attribute is
        also found under those names.
    entry_points : str, optional
        Entry-point group whose modules are imported at the first lookup
        (:func:`load_entry_points`): installed plugins.
    preload : callable, optional
        Called once at the first lookup, before the entry points (solvers: import the
        modules that register the built-in methods).
    exact : bool
        Only the exact name is found (solvers). ``False``: surrounding blanks and case are
        forgiven (``"KD"``, ``"REMD"``: the papers' spellings).
    """

    def __init__(
        self,
        kind: str,
        *,
        plural: str | None = None,
        make: Callable[..., T] | None = None,
        entry_points: str | None = None,
        preload: Callable[[], Any] | None = None,
        exact: bool = False,
    ):
        self.kind, self.plural = kind, plural or f"{kind}s"
        self._make, self._group, self._preload, self._exact = make, entry_points, preload, exact
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False

    # ------------------------------------------------------------------ registering

    def register(self, name: str, obj: Any = _MISSING, /, **capabilities: Any) -> Any:
        """Register ``obj`` as ``name``; without ``obj``, a decorator that does so. Returns
        ``obj`` unchanged. A name or alias already registered raises ValueError."""
        if obj is _MISSING:
            return lambda fn: self.register(name, fn, **capabilities)
        if self._make is None and capabilities:
            raise TypeError(
                f"{self.kind} registry takes no capabilities; got {sorted(capabilities)}"
            )
        entry = self._make(name, obj, **capabilities) if self._make is not None else obj
        aliases = tuple(getattr(entry, "aliases", ()) or ())
        for key in (name, *aliases):
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} name {key!r} is already registered")
        self._entries[name] = entry
        self._aliases.update({alias: name for alias in aliases})
        return obj

    @contextlib.contextmanager
    def restoring(self) -> Iterator["Registry[T]"]:
        """A block after which the registry holds what it held before (tests, trial imports)."""
        self._load()
        entries, aliases = dict(self._entries), dict(self._aliases)
        try:
            yield self
        finally:
            self._entries.clear()
            self._entries.update(entries)
            self._aliases.clear()
            self._aliases.update(aliases)

    def replace(self, name: str, entry: T) -> None:
        """Put ``entry`` in place of the registered ``name`` (inside :meth:`restoring`: e.g.
        the smoke run's stand-in datasets); an unknown name raises KeyError."""
        self._load()
        if name not in self._entries:
            raise KeyError(f"no {self.kind} {name!r} to replace")
        self._entries[name] = entry

    # ------------------------------------------------------------------ looking up

    def _load(self) -> None:
        """The plugin hook: the preload, then the entry points' modules, once."""
        if self._loaded:
            return
        self._loaded = True  # first: a plugin that looks its registry up does not recurse
        try:
            if self._preload is not None:
                self._preload()
        except BaseException:
            self._loaded = False  # a built-in module that fails to import fails every lookup
            raise
        if self._group is not None:
            load_entry_points(self._group)

    def _find(self, name: Any) -> T | None:
        try:
            if name in self._entries:
                return self._entries[name]
            if name in self._aliases:
                return self._entries[self._aliases[name]]
        except TypeError:  # unhashable
            return None
        if self._exact:
            return None
        key = str(name).strip()
        folded = {k.lower(): k for k in (*self._entries, *self._aliases)}
        if key.lower() in folded:
            key = folded[key.lower()]
            return self._entries[self._aliases.get(key, key)]
        return None

    def get(self, name: Any) -> T:
        """The entry registered as ``name`` (or an alias); an unknown name raises ValueError
        in one line: the close matches (case-insensitive) and the known names."""
        if not self._loaded:
            self._load()
        try:  # the common case first: a solve looks its method up on every call
            return self._entries[name]
        except (KeyError, TypeError):
            entry = self._find(name)
        if entry is not None:
            return entry
        key = name if self._exact else str(name).strip()
        hint = did_you_mean(key, (*self._entries, *self._aliases), fold_case=True)
        raise ValueError(
            f"unknown {self.kind} {name!r}{hint} Known {self.plural}: "
            f"{', '.join(sorted(self._entries))}"
        )

    def __contains__(self, name: Any) -> bool:
        self._load()
        return self._find(name) is not None

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` of every entry, in registration order."""
        self._load()
        return list(self._entries.items())

    def names(self, **flags: Any) -> list[str]:
        """Names of the entries whose attributes equal ``flags`` (all of them without flags),
        in registration order; a flag no entry has raises ValueError."""
        self._load()
        if flags and self._entries:
            known = set().union(*(_attributes(e) for e in self._entries.values()))
            unknown = set(flags) - known
            if unknown:
                raise ValueError(
                    f"unknown capability flag(s) {sorted(unknown)}; known: {sorted(known)}"
                )
        return [
            n for n, e in self._entries.items() if all(getattr(e, k) == v for k, v in flags.items())
        ]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"
