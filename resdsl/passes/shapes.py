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
                node.shape = OPS[node.op].shape(node.attrs, inputs)
            except ShapeError as exc:
                flattener = _flattened_by(graph, name)
                if flattener is not None and graph.node(flattener).scope:
                    # An `fc` inside a block is the mistake, not the head layer that trips over it.
                    span, notes = locate(graph, flattener)
                    node = graph.node(name)
                    raise ResdslError(f"`{graph.node(flattener).op}` inside a block makes a flat vector, "
                                      f"but `{node.op}` after it needs a feature map", span,
                                      hint="`fc` belongs in the head; use `conv OUT k1` inside blocks",
                                      notes=notes + ((f"`{node.op}` is here", node.span),)) from None
                span, notes = locate(graph, name)
                raise ResdslError(str(exc), span, hint=exc.hint, notes=notes) from None
        _check_output(graph)
        return False


def _check_output(graph: Graph) -> None:
    """A network that ends in a vector must end in its declared class vector; one that ends in a
    feature map (a backbone, a head without `fc`) is reported with that shape instead."""
    shape = graph.shape(graph.output)
    if graph.outputs or not graph.classes_span:
        return  # named outputs (a backbone): no class vector to check
    if len(shape) == 1 and shape[0] != graph.classes:
        span, notes = locate(graph, graph.output)
        raise ResdslError(f"the network outputs {shape[0]} values per image, but declares "
                          f"`classes {graph.classes}`", span,
                          notes=notes + (("the classes are declared here", graph.classes_span),),
                          hint="end the head with `fc classes`")


def _flattened_by(graph: Graph, name: str) -> str | None:
    """The node that turned a feature map into the flat vector `name` reads, if it reads one."""
    current = next((i for i in graph.inputs(name) if len(graph.shape(i)) == 1), None)
    while current is not None:
        inputs = graph.inputs(current)
        if not inputs or len(graph.shape(inputs[0])) != 1:
            return current
        current = inputs[0]
    return None


def locate(graph: Graph, name: str) -> tuple[Span | None, tuple]:
    """Where to point an error about `name`: its statement, and the stage that made its block.

    A statement in the prelude is not the user's to edit, so then the stage comes first.
    """
    node = graph.node(name)
    span, scope = node.span, node.scope
    if not scope:
        return span, ()
    block = graph.blocks[scope]
    shape = "x".join(map(str, graph.shape(block.input)))
    where = f"block {scope} (`{block.block}`, input {shape})"
    if in_prelude(span):
        statement = span.source_line().strip()
        return block.span, ((f"in {where}, at `{statement}` (prelude line {span.line})", None),)
    return span, ((f"in {where}, made by stage `{block.stage}`", block.span),)
