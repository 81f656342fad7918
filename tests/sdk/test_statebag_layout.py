"""The engine's module layout: no import cycles between its modules, counting imports inside
functions and under TYPE_CHECKING, which break no import today but tie the modules together
all the same."""

from __future__ import annotations

import ast
from pathlib import Path

import analemma_sdk.statebag

PACKAGE = Path(analemma_sdk.statebag.__file__).parent


def imports_within_package() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    for path in PACKAGE.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:  # from . import metrics
                    found.update(alias.name for alias in node.names)
        graph[path.stem] = {name for name in found & modules if name != "__init__"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_layout__statebag_modules__no_import_cycle():
    assert find_cycle(imports_within_package()) is None


def test_layout__cycle_finder__finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_layout__bag_and_planning__know_nothing_of_the_hydrator():
    graph = imports_within_package()
    assert "hydrator" not in graph["bag"]
    assert not graph["planning"] & {"hydrator", "packing", "commit", "reader", "stores", "store_urls"}
    assert not graph["packing"] & {"hydrator", "commit", "reader", "stores", "store_urls"}
    assert "factory" not in graph["hydrator"]
