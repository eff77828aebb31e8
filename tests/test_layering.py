"""The pipeline's layers hold for the front end: no graph pass reaches the parser, the loader or
the lowering through its imports (a user policy reaches the shortcut pass as an IR template), and
the modules lowering is split into stay below the front end where the pass uses them."""
from __future__ import annotations

import networkx as nx
from test_structure import PACKAGE, import_graph

FRONT_END = {"resdsl.parser", "resdsl.loader", "resdsl.lower"}


def test_no_pass_imports_the_front_end() -> None:
    graph = import_graph(PACKAGE)
    passes = [m for m in graph if m.startswith("resdsl.passes")]
    assert "resdsl.passes.shortcuts" in passes
    reached = {(p, f) for p in passes for f in FRONT_END if nx.has_path(graph, p, f)}
    assert not reached, f"passes importing the front end: {sorted(reached)}"


def test_lowering_imports_its_parts() -> None:
    """A check that the test above can fail: lowering itself reaches the parser and its parts."""
    graph = import_graph(PACKAGE)
    for part in ("resdsl.expressions", "resdsl.attributes", "resdsl.labels", "resdsl.blocks", "resdsl.joins",
                 "resdsl.header", "resdsl.templates", "resdsl.parser"):
        assert nx.has_path(graph, "resdsl.lower", part), part
