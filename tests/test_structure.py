"""The package's import graph, read from the source (ast): every `import` counts, at the top of a
module, inside a function (the usual way to hide a cycle) or under `if TYPE_CHECKING:`. The
pipeline's layers (parse -> IR -> passes -> backends -> CLI) only work as layers if no module
needs one that needs it back."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "resdsl"

# Cycles allowed to remain: none since the last one (training.data <-> images) went (issue 29, item 5).
KNOWN: set[frozenset[str]] = set()


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path) -> set[str]:
    """The names of `root`'s package that `path` imports, anywhere in it, as written: a package,
    a module, or a module's attribute (`from .ops import fmt_shape` -> resdsl.ops.fmt_shape)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found |= {f"{module}.{alias.name}" for alias in node.names} | {module}
    return {n for n in found if n == root.name or n.startswith(root.name + ".")}


def import_graph(root: Path) -> nx.DiGraph:
    """Module -> each module of the package it imports (the longest prefix of a name that is one)
    and the packages above that, whose `__init__` runs first."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = nx.DiGraph()
    graph.add_nodes_from(paths)
    for name, path in paths.items():
        for target in imported(path, root):
            while target:
                # A module's own packages are imported before it runs: no edge back to them.
                if target in paths and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
                target = target.rpartition(".")[0]
    return graph


def cycles(graph: nx.DiGraph) -> list[tuple[frozenset[str], str]]:
    """Each group of modules that import each other, with one cycle through it spelled out."""
    found = []
    for group in nx.strongly_connected_components(graph):
        if len(group) > 1:
            cycle = [a for a, _ in nx.find_cycle(graph.subgraph(group))]
            found.append((frozenset(group), " -> ".join([*cycle, cycle[0]])))
    return found


def test_no_new_import_cycle() -> None:
    new = [f"{cycle} (modules in the cycle group: {', '.join(sorted(group))})"
           for group, cycle in cycles(import_graph(PACKAGE)) if not any(group <= known for known in KNOWN)]
    assert not new, "import cycles:\n" + "\n".join(new)


def test_the_graph_counts_imports_inside_functions_and_for_type_checking(tmp_path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from pkg.a import x\n")
    (pkg / "d.py").write_text("import pkg.sub.b\nfrom . import c\n")
    graph = import_graph(pkg)
    assert set(graph.edges) == {("pkg.a", "pkg.sub.b"), ("pkg.a", "pkg.sub"), ("pkg.sub.b", "pkg.c"),
                                ("pkg.c", "pkg.a"), ("pkg.d", "pkg.sub.b"), ("pkg.d", "pkg.sub"),
                                ("pkg.d", "pkg.c")}
    [(group, cycle)] = cycles(graph)
    assert group == {"pkg.a", "pkg.sub.b", "pkg.c"}
    assert cycle.split(" -> ")[0] == cycle.split(" -> ")[-1] and len(cycle.split(" -> ")) == 4


def test_the_cycles_this_issue_named_are_gone() -> None:
    graph = import_graph(PACKAGE)
    for a, b in (("resdsl.bench", "resdsl.tvm.engine"), ("resdsl.tvm.lowering", "resdsl.tvm.workdir")):
        assert not (nx.has_path(graph, a, b) and nx.has_path(graph, b, a)), (a, b)


def test_no_module_over_400_lines_and_no_function_over_60() -> None:
    """Small files with one job (issue 29, item 5): the sizes a reader can hold at once."""
    long_files, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400:
            long_files.append(f"{path.relative_to(PACKAGE.parent)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long_functions.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {length}")
    assert not long_files and not long_functions, "\n".join(long_files + long_functions)
