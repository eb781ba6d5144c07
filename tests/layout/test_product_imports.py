"""The product (`cloud4iot`, `extender`, `gateway_monitor`, `rebalancer`) never imports
dev tooling, and its modules import each other without a circle.

Two views: what a fresh interpreter actually loads when every product module is
imported, and the static graph of every import statement (lazy ones inside
functions included, `if TYPE_CHECKING:` blocks excluded).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("cloud4iot", "extender", "gateway_monitor", "rebalancer")
DEV_TOOLS = ("devcluster", "demo", "bench", "tests")


def product_files() -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) for every .py file of the product packages."""
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def is_dev_tool(module: str) -> bool:
    return module.split(".")[0] in DEV_TOOLS


# --- what a fresh interpreter loads -------------------------------------------------------

IMPORT_EVERYTHING = """
import contextlib, importlib, io, json, sys
modules, product = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in modules:
    if name.endswith(".__main__"):
        # An entry point runs its CLI when imported: make that `--help`, which exits.
        sys.argv[1:] = ["--help"]
        with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module(name)
    else:
        importlib.import_module(name)
print(json.dumps({
    "modules": sorted(sys.modules),
    "files": {p: sys.modules[p].__file__ for p in product},
}))
"""


def test_importing_every_product_module_loads_no_dev_tool(tmp_path: Path) -> None:
    modules = [name for name, _ in product_files()]
    assert "extender.state.kube" in modules
    assert "extender.__main__" in modules
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, json.dumps(modules), json.dumps(PRODUCT)],
        cwd=tmp_path,  # not the repository root: only PYTHONPATH puts it on sys.path
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.splitlines()[-1])
    for package, file in loaded["files"].items():
        assert Path(file).is_relative_to(ROOT / package), f"{package} came from {file}"
    dev = [m for m in loaded["modules"] if is_dev_tool(m)]
    assert dev == [], f"importing the product loaded dev tooling: {dev}"


# --- the static import graph --------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # file:line of the import statement


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Every import statement of a module, at any depth, except under `if TYPE_CHECKING:`."""

    def __init__(self) -> None:
        self.found: list[ast.Import | ast.ImportFrom] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append(node)


def _resolve(name: str, known: set[str]) -> str:
    """The longest prefix of a dotted name that is a product module (else the name)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return name


def import_edges() -> list[Edge]:
    files = dict(product_files())
    known = set(files)
    edges: list[Edge] = []
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        for node in visitor.found:
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    base_parts = package[: len(package) - (node.level - 1)]
                    base = ".".join([*base_parts, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                for alias in node.names:
                    # `from pkg import name`: the submodule pkg.name if there is one
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in known else base)
            for target in targets:
                resolved = _resolve(target, known)
                if resolved != module:
                    edges.append(Edge(module, resolved, where))
    return edges


def test_imports_under_type_checking_do_not_count() -> None:
    code = """
from typing import TYPE_CHECKING
import typing
if TYPE_CHECKING:
    import devcluster
else:
    import json
if typing.TYPE_CHECKING:
    import demo
def f():
    import bench
"""
    visitor = _Imports()
    visitor.visit(ast.parse(code))
    names = [a.name for node in visitor.found for a in node.names]
    assert names == ["TYPE_CHECKING", "typing", "json", "bench"]


def test_the_import_graph_sees_lazy_and_relative_imports() -> None:
    edges = {(e.source, e.target) for e in import_edges()}
    # lazy, inside a function
    assert ("extender.app", "extender.state.kube") in edges
    # `from extender import webhook`: the submodule, not the package
    assert ("extender.app", "extender.webhook") in edges


def test_no_product_module_imports_dev_tooling() -> None:
    bad = [f"{e.where}: {e.source} -> {e.target}" for e in import_edges() if is_dev_tool(e.target)]
    assert bad == [], "product imports dev tooling:\n" + "\n".join(bad)


def find_cycles(edges: list[Edge]) -> list[tuple[list[str], list[Edge]]]:
    """Per strongly connected component of more than one module (Tarjan): its modules and
    one shortest cycle through the first of them."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: set[str] = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles: list[tuple[list[str], list[Edge]]] = []
    for component in components:
        start = min(component)
        # shortest way back to start inside the component (breadth first)
        came_by: dict[str, Edge] = {}
        frontier = [start]
        while frontier and start not in came_by:
            nxt: list[str] = []
            for v in frontier:
                for w, e in sorted(graph.get(v, {}).items()):
                    if w in component and w not in came_by:
                        came_by[w] = e
                        nxt.append(w)
            frontier = nxt
        path = [came_by[start]]
        while path[-1].source != start:
            path.append(came_by[path[-1].source])
        cycles.append((sorted(component), path[::-1]))
    return cycles


def describe(members: list[str], cycle: list[Edge]) -> str:
    hops = " -> ".join([cycle[0].source, *(f"{e.target} ({e.where})" for e in cycle)])
    if len(members) > len(cycle):
        hops += f"\n  (one of the circles among {', '.join(members)})"
    return hops


def test_find_cycles_reports_the_path() -> None:
    edges = [
        Edge("a", "b", "a:1"),
        Edge("b", "c", "b:1"),
        Edge("c", "a", "c:1"),
        Edge("c", "d", "c:2"),
    ]
    ((members, cycle),) = find_cycles(edges)
    assert members == ["a", "b", "c"]
    assert describe(members, cycle) == "a -> b (a:1) -> c (b:1) -> a (c:1)"
    ((members, cycle),) = find_cycles([*edges, Edge("b", "a", "b:2")])
    assert describe(members, cycle) == (
        "a -> b (a:1) -> a (b:2)\n  (one of the circles among a, b, c)"
    )
    assert find_cycles([Edge("a", "b", "a:1"), Edge("b", "c", "b:1")]) == []


def test_no_import_circle_among_product_modules() -> None:
    product = [e for e in import_edges() if e.target.split(".")[0] in PRODUCT]
    cycles = find_cycles(product)
    assert cycles == [], "import circles:\n" + "\n".join(describe(*c) for c in cycles)
