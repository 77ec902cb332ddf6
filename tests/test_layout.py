"""The import graph: no cycles, no reach-ins to private names, torch only in training/.

Imports are read from the source (ast), function-level imports included, so a
cycle hidden inside a function body is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ednn_dask", "training")
# training modules that need torch; every other module must import without it
TORCH_MODULES = {"training.ednn", "training.nets", "training.train", "training.export",
                 "training.precondition", "training.multiscale"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, top_level: bool = False) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import statement in the file (or its top level)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    found = []
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [a.name for a in node.names]))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for module, names in _imports(name, path):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            edges |= set(targets) or ({module} if module in modules else set())
        # a package's __init__ re-exports its modules: importing a submodule is not a cycle
        graph[name] = {m for m in edges if not name.startswith(m + ".") and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycles():
    cycle = find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_a_private_name_of_another():
    modules = _modules()
    offenders = [
        f"{name} imports {module}.{n}"
        for name, path in modules.items()
        for module, names in _imports(name, path)
        if module.split(".")[0] in PACKAGES
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not offenders, offenders


def test_torch_is_imported_only_by_the_training_modules_that_train():
    """Other modules may import torch inside a function that trains, never on import."""
    modules = _modules()
    offenders = [
        name
        for name, path in modules.items()
        if name not in TORCH_MODULES
        and any(m.split(".")[0] == "torch" or m in TORCH_MODULES
                for m, _ in _imports(name, path, top_level=True))
    ]
    assert not offenders, f"import torch outside {sorted(TORCH_MODULES)}: {offenders}"
