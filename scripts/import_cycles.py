#!/usr/bin/env python3
"""Print the import cycles between the modules and between the packages of a
Python package, read from its source (nothing is imported or run), and, for
``imgfac_twisted``, every import that goes up the layers of docs/ARCHITECTURE.md.

    python3 scripts/import_cycles.py [package_dir]   (default: imgfac_twisted)

Every ``import``/``from ... import`` counts, including those under
``if TYPE_CHECKING:`` and inside functions: a cycle hidden there is still a
cycle a reader has to untangle.  The exit status is 1 when a cycle or a
layer violation exists.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

Graph = dict[str, set[str]]


def module_name(root: Path, path: Path) -> str:
    """The dotted module name of ``path``, a file under package ``root``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every absolute dotted name ``module`` imports (``from a import b``
    yields both ``a`` and ``a.b``: ``b`` may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


def module_graph(root: Path) -> Graph:
    """Module -> the modules of the same package it imports."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph: Graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = set()
        for imported in imported_names(tree, name, path.name == "__init__.py"):
            if imported in files and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def package_graph(graph: Graph) -> Graph:
    """Package -> the packages its modules import (a module's package is
    its parent; a package's own ``__init__`` belongs to it)."""

    def package_of(module: str) -> str:
        return module if module in packages else module.rpartition(".")[0]

    packages = {m for m in graph if any(o.startswith(m + ".") for o in graph)}
    result: Graph = {}
    for module, targets in graph.items():
        source = package_of(module)
        for target in targets:
            destination = package_of(target)
            # A parent package importing its own children is not a cycle
            # of layers; a child importing its parent's __init__ is.
            if destination != source and not destination.startswith(source + "."):
                result.setdefault(source, set()).add(destination)
        result.setdefault(source, set())
    return result


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


#: imgfac_twisted's layers, outermost first (docs/ARCHITECTURE.md): a module may import its own
#: layer and those below.  Modules not listed (config, doors, deferreds, errors, xmlsafe, ...)
#: are the bottom: small helpers every layer may use.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("tap", "cli", "client", "events.consumer"),
    ("service", "core", "nodes", "testing"),
    ("web",),
    ("jobs",),
    ("os", "targets", "providers", "registry", "imagestore"),
    ("virt",),
    ("store",),
    ("events", "metrics"),
    ("model", "template", "tdl_schema"),
)


def layer_of(module: str, package: str) -> int:
    """How deep ``module`` lies: 0 for the outermost layer, len(LAYERS) for the helpers at the bottom."""
    for depth, members in enumerate(LAYERS):
        for member in members:
            name = f"{package}.{member}"
            if module == name or module.startswith(name + "."):
                return depth
    return len(LAYERS)


def layer_violations(graph: Graph, package: str) -> list[tuple[str, str]]:
    """Every (importer, imported) where the imported module lies in an outer layer."""
    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if layer_of(target, package) < layer_of(source, package)
    )


def show(title: str, components: Iterable[list[str]], graph: Graph) -> int:
    """Print each cycle with the edges inside it; return how many."""
    components = list(components)
    print(f"{title}: {len(components)} cycle(s)")
    for component in components:
        members = set(component)
        print("  " + " <-> ".join(component))
        for node in component:
            for other in sorted(graph[node] & members):
                print(f"      {node} -> {other}")
    return len(components)


def main(argv: list[str]) -> int:
    """Print the module cycles, then the package cycles."""
    root = Path(argv[1] if len(argv) > 1 else "imgfac_twisted").resolve()
    modules = module_graph(root)
    packages = package_graph(modules)
    count = show("module import cycles", strongly_connected(modules), modules)
    count += show("package import cycles", strongly_connected(packages), packages)
    if root.name == "imgfac_twisted":
        violations = layer_violations(modules, root.name)
        print(f"imports up the layers: {len(violations)}")
        for source, target in violations:
            print(f"  {source} -> {target}")
        count += len(violations)
    return 1 if count else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
