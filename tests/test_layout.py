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


# ---------------------------------------------------------------------------------------------- sizes
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60  # from the ``def`` line to the last line of the body, docstring included
#: files allowed over MAX_FILE_LINES, each with the reason; remove an entry when its file is split
FILE_EXEMPTIONS: dict[str, str] = {}
#: functions allowed over MAX_FUNCTION_LINES ("path:qualified name"), each with the reason
FUNCTION_EXEMPTIONS: dict[str, str] = {}


def file_lengths(root: Path = ROOT) -> dict[str, int]:
    """Lines of every module under ``root``: {path relative to the repository: lines}."""
    return {str(p.relative_to(root.parent)): len(p.read_text().splitlines()) for p in sorted(root.rglob("*.py"))}


def function_lengths(source: str) -> dict[str, int]:
    """Lines of every function and method in ``source``, nested ones too: {qualified name: lines}."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out[name] = child.end_lineno - child.lineno + 1
                name += "."
            visit(child, name)

    visit(ast.parse(source), "")
    return out


def size_violations(root: Path = ROOT) -> list[str]:
    files = file_lengths(root)
    bad = [f"{path}: {n} lines" for path, n in files.items() if n > MAX_FILE_LINES and path not in FILE_EXEMPTIONS]
    for path in files:
        for name, n in function_lengths((root.parent / path).read_text()).items():
            if n > MAX_FUNCTION_LINES and f"{path}:{name}" not in FUNCTION_EXEMPTIONS:
                bad.append(f"{path}:{name}: {n} lines")
    return bad


def test_no_module_over_400_lines_and_no_function_over_60():
    assert not size_violations(), "split these along a real seam, or add a commented exemption"


def test_every_exemption_is_still_needed():
    files = file_lengths()
    assert all(files.get(path, 0) > MAX_FILE_LINES for path in FILE_EXEMPTIONS), FILE_EXEMPTIONS
    for key in FUNCTION_EXEMPTIONS:
        path, name = key.split(":")
        assert function_lengths((ROOT.parent / path).read_text()).get(name, 0) > MAX_FUNCTION_LINES, key


def test_an_oversized_file_or_function_would_be_found(tmp_path):
    package = tmp_path / "lscdistill"
    (package / "sub").mkdir(parents=True)
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    (package / "sub" / "ok.py").write_text(f"def fits():\n{body}\n")  # exactly MAX_FUNCTION_LINES lines
    method = body.replace("\n", "\n    ")  # one level deeper, and one line longer
    (package / "long.py").write_text(f"class A:\n    def method(self):\n    {method}\n        y = 0\n")
    (package / "big.py").write_text("x = 0\n" * (MAX_FILE_LINES + 1))
    assert size_violations(package) == [
        f"lscdistill/big.py: {MAX_FILE_LINES + 1} lines",
        f"lscdistill/long.py:A.method: {MAX_FUNCTION_LINES + 1} lines",
    ]
