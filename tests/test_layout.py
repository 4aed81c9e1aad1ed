"""The package's import graph has no cycle at module level (imports inside functions are not edges)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx  # a dependency of torch

ROOT = Path(__file__).parents[1] / "lscdistill"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    paths = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(paths)
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:  # `from . import x` may name a module or a name in the package
                    for cand in (f"{target}.{alias.name}", target):
                        if cand in paths and cand != name:
                            graph.add_edge(name, cand)
                            break
            elif isinstance(node, ast.Import):
                graph.add_edges_from((name, a.name) for a in node.names if a.name in paths)
    return graph


def test_the_graph_sees_known_edges():
    graph = import_graph()
    assert graph.has_edge("lscdistill.centers", "lscdistill.decode")
    assert graph.has_edge("lscdistill.snap.store", "lscdistill._version")


def test_no_module_level_import_cycle():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, cycles


def test_a_cycle_would_be_found():
    graph = import_graph()
    graph.add_edge("lscdistill.decode", "lscdistill.centers")  # the reverse of a real edge closes a cycle
    assert list(nx.simple_cycles(graph))
