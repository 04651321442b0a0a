"""The architecture, held by a test over the import graph of ``src/actdb`` (ast only).

Every import counts — at module level or inside a function, except those under
``if TYPE_CHECKING:`` (annotations only, never executed) — so a cycle hidden behind a
lazy import fails here too. Rules (docs/architecture.md):

- no import cycles (``from pkg import submodule`` is an edge to the submodule: a package's
  ``__init__`` re-exporting its modules is not a cycle);
- ``actdb.store`` imports nothing of actdb but itself, ``actdb.errors`` and ``actdb._version``;
- ``actdb.query`` and ``actdb.ingest`` import ``actdb.store`` (and ``actdb.models``), never each
  other's internals: query never imports ingest;
- no layer imports an interface (``actdb.cli``, ``actdb.api``);
- nothing imports the facade (``actdb.database``) but the interfaces, the demo and the package root.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "actdb"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("actdb"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("actdb"):
                    # ``from pkg import submodule`` imports the submodule; ``from m import name``, m
                    subs = {f"{target}.{a.name}" for a in child.names} & modules
                    found.update(subs)
                    if len(subs) < len(child.names):
                        found.add(target)
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for target in _imports(tree, name, path.name == "__init__.py", set(modules)):
            if target in modules and target != name:
                graph[name].add(target)
        graph.setdefault(name, set())
    return dict(graph)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _edges(graph: dict[str, set[str]], src: str, dst: str) -> list[str]:
    return sorted(f"{a} -> {b}" for a, bs in graph.items() if a == src or a.startswith(src + ".")
                  for b in bs if b == dst or b.startswith(dst + "."))


GRAPH = import_graph()


def test_the_graph_is_read() -> None:
    # a parser that found nothing would pass every rule below
    assert "actdb.query.executor" in GRAPH and "actdb.store.store" in GRAPH["actdb.store"]
    assert any(t.startswith("actdb.store") for t in GRAPH["actdb.query.executor"])


def test_no_import_cycles() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles (each line one strongly connected set):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_store_imports_nothing_of_actdb_but_errors() -> None:
    allowed = ("actdb.store", "actdb.errors", "actdb._version")
    bad = sorted(f"{a} -> {b}" for a, bs in GRAPH.items() if a.startswith("actdb.store")
                 for b in bs if not b.startswith(allowed))
    assert not bad, bad


@pytest.mark.parametrize("src,dst", [("actdb.query", "actdb.ingest"), ("actdb.ingest", "actdb.query"),
                                     ("actdb.store", "actdb.query"), ("actdb.store", "actdb.ingest"),
                                     ("actdb.models", "actdb.query"), ("actdb.models", "actdb.ingest")])
def test_layer_does_not_import(src: str, dst: str) -> None:
    assert not _edges(GRAPH, src, dst)


@pytest.mark.parametrize("layer", ["actdb.store", "actdb.query", "actdb.ingest", "actdb.models"])
def test_no_layer_imports_an_interface(layer: str) -> None:
    assert not _edges(GRAPH, layer, "actdb.cli") + _edges(GRAPH, layer, "actdb.api")


def test_only_interfaces_import_the_facade() -> None:
    allowed = ("actdb.cli", "actdb.api", "actdb.demo")
    bad = sorted(f"{a} -> actdb.database" for a, bs in GRAPH.items()
                 if "actdb.database" in bs and a != "actdb" and not a.startswith(allowed))
    assert not bad, bad
