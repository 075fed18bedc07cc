"""The harness's layers (harness/__init__.py): each imports only the layers below it,
no module imports another in a circle, no module imports another's private name, and the CLI
is imported by nothing. Read from the modules' own import statements (every one, including
those inside functions), so the rules stay true as the code changes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "harness"
#: rank of each layer: a module may import its own layer and those of a lower rank;
#: transfer and zoo share rank 0 and may not import each other
RANK = {"transfer": 0, "zoo": 0, "training": 1, "experiments": 2, "reports": 3, "cli": 4}
SHARED = {"_lazy"}  # helpers every layer may use


def _module_name(path: Path) -> str:
    rel = path.relative_to(HARNESS.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """``(module imported, names imported from it, line)`` of every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, (
                f"{path}:{node.lineno}: relative import (use harness.<layer>...)"
            )
            out.append((node.module or "", tuple(a.name for a in node.names), node.lineno))
    return out


def _layer(module: str) -> str | None:
    """The layer of ``harness.<layer>...`` (``cli`` for harness.cli), None for other packages."""
    parts = module.split(".")
    if parts[0] != "harness" or len(parts) < 2:
        return None
    return parts[1]


MODULES = {_module_name(p): p for p in sorted(HARNESS.rglob("*.py"))}


def _graph() -> dict[str, set[str]]:
    """module -> the harness modules it imports (a ``from harness.x import y`` of a submodule
    ``y`` counts as importing ``harness.x.y``)."""
    g: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        deps = set()
        for target, names, _ in _imports(path):
            if not target.startswith("harness"):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            deps |= set(subs) or ({target} if target in MODULES else set())
        g[mod] = deps - {mod}
    return g


def test_every_module_lives_in_a_layer():
    loose = [
        m for m in MODULES if m.count(".") == 1 and m.split(".")[1] not in {"cli", "_lazy", *RANK}
    ]
    assert MODULES and not loose, f"modules outside the layers: {loose}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_layer_and_those_below(module):
    own = _layer(module) if module != "harness" else None
    bad = []
    for target, names, line in _imports(MODULES[module]):
        layer = _layer(target)
        if target == "harness":  # from harness import <layer> / lazy names
            layers = [n for n in names if n in RANK]
            layer = layers[0] if layers else None
        if layer is None or layer in SHARED or own is None:
            continue
        if layer == "cli":
            bad.append(f"line {line}: imports the CLI ({target})")
        elif layer != own and (
            RANK[layer] > RANK[own] or (RANK[layer] == RANK[own] and layer != own)
        ):
            bad.append(f"line {line}: {own} imports {layer} ({target})")
    assert not bad, f"{module}: " + "; ".join(bad)


def test_no_module_imports_another_in_a_circle():
    g = _graph()
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    # a package's __init__ naming its submodules lazily is not an import of them
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_private_name_of_another(module):
    bad = [
        f"line {line}: {n} from {target}"
        for target, names, line in _imports(MODULES[module])
        if target.startswith("harness")
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not bad, f"{module}: " + "; ".join(bad)


def test_every_layer_declares_its_public_names():
    import importlib

    for layer in ("transfer", "zoo", "training", "experiments", "reports"):
        pkg = importlib.import_module(f"harness.{layer}")
        assert pkg.__doc__ and len(pkg.__all__) > 3, layer
        for name in pkg.__all__:  # each resolves (the lazy table is not stale)
            assert getattr(pkg, name) is not None, f"harness.{layer}.{name}"


def _body_lines(fn: ast.AST) -> int:
    """Lines of a function's code, its docstring left out."""
    body = fn.body
    doc = (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )
    rest = body[1:] if doc else body
    return fn.end_lineno - rest[0].lineno + 1 if rest else 0


def test_no_function_in_the_harness_is_over_80_lines_of_code():
    """A function a reader can hold in view: at most 80 lines of code (docstring aside)."""
    long = [
        f"{m}.{fn.name}: {_body_lines(fn)}"
        for m, p in MODULES.items()
        for fn in ast.walk(ast.parse(p.read_text()))
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(fn) > 80
    ]
    assert not long, "functions over 80 lines: " + ", ".join(long)
