"""The import graph of service/: no circle, and the extension objects in a leaf.

A circle held open by function-level imports works until someone moves one of them; grimp
reads every import statement, function-level ones included.
"""

from __future__ import annotations

import grimp
import pytest

# Modules that only hold objects other modules bind or read: they import nothing that could
# import them back (model: microblog-api's api/app.py).
LEAVES = {
    "service.extensions": {"service.database"},
    "service.version": set(),
    "service.edge": set(),
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("service", cache_dir=None)


def _circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    circles: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next((c for c in children if c in graph.modules), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_no_import_circle_in_service(graph: grimp.ImportGraph) -> None:
    assert _circles(graph) == []


def test_the_circle_finder_finds_a_circle() -> None:
    class TwoModules:
        modules = {"a", "b", "c"}

        @staticmethod
        def find_modules_directly_imported_by(module: str) -> set[str]:
            return {"a": {"b"}, "b": {"a", "c"}, "c": set()}[module]

    assert _circles(TwoModules()) == [["a", "b"]]  # type: ignore[arg-type]


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaf_modules_import_no_service_module_but_their_own(
    graph: grimp.ImportGraph, leaf: str
) -> None:
    imported = {m for m in graph.find_modules_directly_imported_by(leaf) if m in graph.modules}
    assert imported <= LEAVES[leaf]
    for allowed in LEAVES[leaf]:
        # What a leaf may import never leads back into the app.
        assert not graph.find_upstream_modules(allowed) & {leaf, "service"}
