"""The verifier: structural invariants every backend relies on.

Requires: shapes and legal shortcuts. Changes nothing. A failure here is a compiler bug, not a
user error, so it raises AssertionError-like `IRError` with a message naming the node.
"""
from __future__ import annotations

import networkx as nx

from ..ir import Graph
from ..ops import OPS, fmt_shape


class IRError(Exception):
    pass


class Verify:
    name = "verify"

    def run(self, graph: Graph) -> bool:
        g = graph.nx
        if not nx.is_directed_acyclic_graph(g):
            raise IRError("the graph has a cycle")
        sinks = [n for n in g if g.out_degree(n) == 0]
        if sinks != [graph.output]:
            raise IRError(f"the graph must end in its output {graph.output!r}, ends in {sinks}")
        for name in g:
            node = g.nodes[name]
            info = OPS.get(node["op"])
            if info is None:
                raise IRError(f"{name}: unknown op {node['op']!r}")
            inputs = graph.inputs(name)
            if len(inputs) not in info.arity:
                raise IRError(f"{name}: {node['op']} takes {info.arity} operands, has {len(inputs)}")
            if "shape" not in node:
                raise IRError(f"{name}: no shape; run infer-shapes first")
            if node["op"] == "add":
                shapes = {graph.shape(i) for i in inputs}
                if len(shapes) != 1:
                    raise IRError(f"{name}: add operands differ: "
                                  + " vs ".join(fmt_shape(s) for s in shapes)
                                  + "; run legalize-shortcuts first")
        return False
