"""The import graph of the project (README "How the code is laid out"): every module's imports read with `ast`.

Fails on an import cycle, a private name imported from another project module, a function-local import of a
project module, and `model`/`metrics` importing `sana_eval` or each other.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "metrics", "sana_eval")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, bool, int]]:
    """(imported project module, name taken from it or None, inside a function, line) for each project import."""
    tree = ast.parse(MODULES[module].read_text())
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
             for n in ast.walk(f)}
    # Imports for annotations only (`if TYPE_CHECKING:`) load nothing at run time, so they make no cycle.
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test).endswith("TYPE_CHECKING") for n in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, None, id(node) in local, node.lineno) for a in node.names
                      if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module)
            if source.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:           # `from package import module`
                    found.append((sub, None, id(node) in local, node.lineno))
                else:
                    found.append((source, alias.name, id(node) in local, node.lineno))
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_import_names_a_project_module():
    missing = [f"{m}:{line} imports {target}" for m, rows in GRAPH.items() for target, _, _, line in rows
               if target not in MODULES]
    assert not missing, missing


def test_no_function_local_import_of_a_project_module():
    local = [f"{m}:{line} imports {target}" for m, rows in GRAPH.items() for target, _, inner, line in rows if inner]
    assert not local, local


def test_no_private_name_crosses_modules():
    private = [f"{m}:{line} takes {name} from {target}" for m, rows in GRAPH.items()
               for target, name, _, line in rows if name and name.startswith("_") and target != m]
    assert not private, private


@pytest.mark.parametrize("package, forbidden", [("model", ("sana_eval", "metrics")),
                                                ("metrics", ("sana_eval", "model"))])
def test_model_and_metrics_stand_alone(package, forbidden):
    wrong = [f"{m}:{line} imports {target}" for m, rows in GRAPH.items() if m.split(".")[0] == package
             for target, _, _, line in rows if target.split(".")[0] in forbidden]
    assert not wrong, wrong


def _edges(module: str) -> set[str]:
    """Modules `module` needs loaded: what it imports, and each imported module's parent packages."""
    needed = set()
    for target, _, _, _ in GRAPH[module]:
        parts = target.split(".")
        needed.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    parents = module.split(".")
    return {m for m in needed if m in MODULES and m != module} - {".".join(parents[:i]) for i in range(1, len(parents))}


def test_no_import_cycle():
    edges = {m: _edges(m) for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, cycles
