"""Shape inference.

Requires: a lowered graph. After it, every node has `shape` (batch dimension left out).
Residual adds are not checked here (their shortcut may still need legalizing); `Verify` does.
Idempotent.
"""
from __future__ import annotations

from ..diagnostics import ResdslError
from ..ir import Graph
from ..ops import OPS, ShapeError


class InferShapes:
    name = "infer-shapes"

    def run(self, graph: Graph) -> bool:
        for name in graph.order():
            node = graph.node(name)
            inputs = [graph.shape(i) for i in graph.inputs(name)]
            try:
                node["shape"] = OPS[node["op"]].shape(node["attrs"], inputs)
            except ShapeError as exc:
                raise ResdslError(str(exc), node["span"], hint=exc.hint, notes=_where(graph, name)) from None
        return False


def _where(graph: Graph, name: str):
    scope = graph.node(name)["scope"]
    if not scope:
        return ()
    block = graph.blocks[scope]
    shape = "x".join(map(str, graph.shape(block.input)))
    return ((f"in block {scope} (input {shape}), made by stage `{block.stage}`", block.span),)
