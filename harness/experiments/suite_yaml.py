"""Reading a suite file's YAML: bounded in size, depth and aliases, no key written twice, the
line of every node kept (:class:`YamlLines`) so that an error names it; and the ``--set``
overrides (:func:`apply_overrides`) that edit the raw document before it is checked."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from harness.experiments.suite_types import SuiteError

__all__ = [
    "MAX_SUITE_BYTES",
    "MAX_ALIASES",
    "MAX_NODES",
    "MAX_DEPTH",
    "read_suite_text",
    "compose_yaml",
    "parse_yaml",
    "YamlLines",
    "located_error",
    "parse_override",
    "apply_overrides",
]


#: Largest suite file read (the shipped ones are under 20 kB; PyYAML parses ~1 MB a second).
MAX_SUITE_BYTES = 1 << 20


def read_suite_text(path: Path) -> str:
    """The text of suite file ``path``: at most :data:`MAX_SUITE_BYTES`, UTF-8."""
    size = path.stat().st_size
    if size > MAX_SUITE_BYTES:
        raise SuiteError(
            f"{path}: {size:,} bytes, more than a suite file's {MAX_SUITE_BYTES:,} "
            "(is it a suite? generate long seed lists with --set seeds=...)"
        )
    with open(path, "rb") as f:  # at most the limit, should the file grow meanwhile
        data = f.read(MAX_SUITE_BYTES + 1)
    if len(data) > MAX_SUITE_BYTES:
        raise SuiteError(f"{path}: more than a suite file's {MAX_SUITE_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(
            f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset "
            f"{exc.start}): a suite file is YAML text, saved as UTF-8"
        ) from None


#: Bounds of a suite file's YAML: aliases, and nodes once every alias is expanded (a
#: "billion laughs" file of nested anchors would otherwise take minutes and gigabytes).
MAX_ALIASES = 1000
MAX_NODES = 200_000
#: Deepest nesting of mappings and lists (a suite needs about 6).
MAX_DEPTH = 50


class _SuiteLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """``yaml.SafeLoader`` (libyaml's when PyYAML has it: 7x faster, nesting capped at 1,000
    levels without recursion in Python) that refuses a key written twice in one mapping (YAML
    keeps the last silently; merge keys ``<<: *anchor`` may still be overridden); aliases,
    nodes and depth are bounded by :func:`compose_yaml`."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = key_node.value
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} is written twice in this mapping (first on "
                        f"line {seen[key] + 1}; YAML would keep only the last)",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root) -> None:
    """Raise when ``root`` holds more than :data:`MAX_ALIASES` alias uses or expands to more
    than :data:`MAX_NODES` nodes (counted once per node object, with memoisation)."""
    sizes: dict[int, int] = {}
    uses = {"aliases": 0}
    seen_ids: set[int] = set()

    def size(node, depth: int = 0) -> int:
        if depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", node.start_mark
            )
        if id(node) in sizes:
            uses["aliases"] += 1
            if uses["aliases"] > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} alias uses", node.start_mark
                )
            return sizes[id(node)]
        if id(node) in seen_ids:  # a recursive alias
            raise yaml.composer.ComposerError(None, None, "a recursive alias", node.start_mark)
        seen_ids.add(id(node))
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(v, depth + 1) for v in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        if n > MAX_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"the document expands to more than {MAX_NODES:,} nodes (nested aliases?)",
                node.start_mark,
            )
        sizes[id(node)] = n
        return n

    if root is not None:
        size(root)


def compose_yaml(text: str):
    """``(root node, data)`` of one YAML document, its size and depth checked between the two
    (:func:`_check_expansion`) so that nothing unbounded is ever constructed."""
    loader = _SuiteLoader(text)
    try:
        node = loader.get_single_node()
        _check_expansion(node)
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def parse_yaml(text: str, filename: str):
    """``(root node, data)`` of suite text ``text`` (:func:`compose_yaml`), or a
    :class:`SuiteError` naming ``filename`` and the line of the invalid YAML."""
    try:
        return compose_yaml(text)
    except RecursionError:
        raise SuiteError(
            f"{filename}: invalid YAML: nested far deeper than a suite's "
            f"{MAX_DEPTH} levels (a generated or corrupt file?)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else "unknown line"
        if isinstance(getattr(exc, "position", None), int):  # a character YAML refuses
            line = f"line {text.count(chr(10), 0, exc.position) + 1}"
        problem = (getattr(exc, "problem", None) or str(exc)).strip().splitlines()[0]
        if "nesting depth" in problem:  # libyaml's cap, 1,000 levels
            problem += f" (a suite nests a few levels; at most {MAX_DEPTH} are read)"
        raise SuiteError(f"{filename}, {line}: invalid YAML: {problem}") from None


class YamlLines:
    """Line numbers (1-based) of the nodes of a YAML document, by key path."""

    def __init__(self, root):
        self.root = root if isinstance(root, yaml.Node) else None

    def line(self, path: Sequence[Any]) -> int | None:
        node, best = self.root, None
        if node is None:
            return None
        best = node.start_mark.line + 1
        for part in path:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == str(part):
                        best = k.start_mark.line + 1
                        nxt = v
                        break
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and part < len(node.value)
            ):
                nxt = node.value[part]
                best = nxt.start_mark.line + 1
            if nxt is None:
                break
            node = nxt
        return best


def located_error(filename: str, lines: YamlLines, path: Sequence[Any], msg: str) -> SuiteError:
    line = lines.line(path)
    key = ".".join(map(str, path)) or "<top>"
    return SuiteError(f"{filename}, line {line if line is not None else '?'}, key {key!r}: {msg}")


_SUBMAPS = ("grid", "model_params", "dataset_params", "train")


def parse_override(text: str) -> tuple[list[str], Any]:
    key, eq, value = text.partition("=")
    shown = repr(text if len(text) <= 200 else text[:200] + "...")
    if not eq or not key.strip():
        raise SuiteError(f"--set expects key=value, got {shown}")
    try:
        parsed = compose_yaml(value)[1] if value.strip() else None
    except RecursionError:
        raise SuiteError(f"--set {shown}: the value is nested too deeply") from None
    except yaml.YAMLError as exc:
        problem = (getattr(exc, "problem", None) or str(exc)).strip().splitlines()[0]
        raise SuiteError(f"--set {shown}: the value is not valid YAML ({problem})") from None
    return key.strip().split("."), parsed


def apply_overrides(raw: Any, overrides: Iterable[str]) -> Any:
    """Return a copy of ``raw`` with each ``"a.b.c=value"`` set (value parsed as YAML).

    Keys are dotted paths into the suite (``stages.students.train.epochs=2``, ``seeds=[0]``);
    the last part may itself hold dots when it names a regularizer parameter
    (``stages.students.grid.kd.tau=[2,4]`` sets key ``kd.tau`` of ``grid``).
    """
    overrides = list(overrides)
    if not overrides:
        return raw
    raw = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node, i = raw, 0
        # descend while the next part names an existing entry; the rest is one (dotted) key
        while i < len(parts) - 1:
            part = parts[i]
            if isinstance(node, dict) and part in node and isinstance(node[part], (dict, list)):
                node = node[part]
            elif isinstance(node, dict) and part not in node and part in _SUBMAPS:
                node = node.setdefault(part, {})  # e.g. a stage's grid given on the CLI
            elif (
                isinstance(node, list)
                and part.lstrip("-").isdigit()
                and -len(node) <= int(part) < len(node)
            ):
                node = node[int(part)]
            else:
                break
            i += 1
        if parts[:i] == ["stages"] and len(parts) - i > 1 and isinstance(node, dict):
            raise SuiteError(
                f"--set {text!r}: no stage {parts[i]!r} (stages: "
                f"{', '.join(map(str, node)) or 'none'})"
            )
        last = ".".join(parts[i:])
        if isinstance(node, list):
            if not (last.lstrip("-").isdigit() and -len(node) <= int(last) < len(node)):
                raise SuiteError(
                    f"--set {text!r}: {last!r} is not an index of the list at "
                    f"{'.'.join(parts[:i])!r}"
                )
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SuiteError(f"--set {text!r}: cannot set a key inside a non-mapping")
    return raw
