"""Shape inference.

Requires: a well-formed graph. Provides: shapes, every node's `shape` (batch dimension left
out) as its op's rule gives it. Residual adds are not checked here (their shortcut may still
need legalizing). Idempotent: it rewrites every shape, the same ones on a second run, and
reports no change.
"""
from __future__ import annotations

from ..diagnostics import ResdslError, Span, in_prelude
from ..ir import Graph
from ..ops import OPS, ShapeError
from .properties import SHAPES


class InferShapes:
    name = "infer-shapes"
    requires: frozenset[str] = frozenset()
    provides = frozenset({SHAPES})

    def run(self, graph: Graph) -> bool:
        for name in graph.order():
            node = graph.node(name)
            inputs = [graph.shape(i) for i in graph.inputs(name)]
            try:
                node["shape"] = OPS[node["op"]].shape(node["attrs"], inputs)
            except ShapeError as exc:
                span, notes = locate(graph, name)
                raise ResdslError(str(exc), span, hint=exc.hint, notes=notes) from None
        return False


def locate(graph: Graph, name: str) -> tuple[Span | None, tuple]:
    """Where to point an error about `name`: its statement, and the stage that made its block.

    A statement in the prelude is not the user's to edit, so then the stage comes first.
    """
    node = graph.node(name)
    span, scope = node["span"], node["scope"]
    if not scope:
        return span, ()
    block = graph.blocks[scope]
    shape = "x".join(map(str, graph.shape(block.input)))
    where = f"block {scope} (`{block.block}`, input {shape})"
    if in_prelude(span):
        statement = span.source_line().strip()
        return block.span, ((f"in {where}, at `{statement}` (prelude line {span.line})", None),)
    return span, ((f"in {where}, made by stage `{block.stage}`", block.span),)
