"""What a graph can be known to satisfy, each property with the check that proves it.

Passes declare the properties they require and the ones they provide; the pass manager runs
these checks around every pass, so a pass that breaks its promise fails at once, naming itself
and the node, instead of a backend failing later on a subtly wrong graph. Every check is linear
in the graph's size.
"""
from __future__ import annotations

from collections.abc import Callable

import networkx as nx

from ..ir import Graph
from ..ops import OPS, ShapeError, fmt_shape

WELL_FORMED = "well-formed"  # a DAG of known ops, each with its arity, ending in the output
SHAPES = "shapes"  # every node's shape is the one its op's rule gives
LEGAL_ADDS = "legal-adds"  # every residual add joins operands of one shape


class IRError(Exception):
    """A graph that breaks an invariant: a compiler bug, not a user error."""


def well_formed(graph: Graph) -> list[str]:
    try:
        graph.order()  # cached until the next edit, which every later check reuses
    except nx.NetworkXUnfeasible:
        return ["the graph has a cycle"]
    problems = []
    sinks = graph.sinks()
    if sinks != [graph.output]:
        problems.append(f"the graph must end in its output {graph.output!r}, ends in {sinks}")
    for name in graph.order():
        op = graph.node(name).op
        info = OPS.get(op)
        if info is None:
            problems.append(f"{name}: unknown op {op!r}")
            continue
        arity = len(graph.inputs(name))
        if arity not in info.arity:
            problems.append(f"{name}: {op} takes {info.arity} operands, has {arity}")
    return problems


def shapes(graph: Graph) -> list[str]:
    problems = []
    for name in graph.order():
        node = graph.node(name)
        if node.shape is None:
            problems.append(f"{name}: no shape")
            continue
        try:
            inputs = [graph.shape(i) for i in graph.inputs(name)]
            want = OPS[node.op].shape(node.attrs, inputs)
        except (KeyError, ShapeError) as exc:
            problems.append(f"{name}: its shape rule fails ({exc})")
            continue
        if want != node.shape:
            problems.append(f"{name}: shape {fmt_shape(node.shape)} is stale, "
                            f"its inputs give {fmt_shape(want)}")
    return problems


def legal_adds(graph: Graph) -> list[str]:
    problems = []
    for name in graph.nodes_of("add"):
        operands = graph.inputs(name)
        found = {graph.shape(i) for i in operands}
        if len(found) != 1:
            problems.append(f"{name}: add operands differ: " + " vs ".join(fmt_shape(s) for s in found))
        if graph.node(name).attrs["gated"] != (len(operands) == 3):
            problems.append(f"{name}: a gated add needs its gate as a third operand, and only it")
    return problems


CHECKS: dict[str, Callable[[Graph], list[str]]] = {
    WELL_FORMED: well_formed,
    SHAPES: shapes,
    LEGAL_ADDS: legal_adds,
}


def check(graph: Graph, properties, context: str) -> None:
    """Raise IRError listing every way `graph` fails `properties` (in CHECKS' order)."""
    for prop, find in CHECKS.items():
        if prop in properties:
            problems = find(graph)
            if problems:
                more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
                shown = "; ".join(problems[:5]) + more
                raise IRError(f"{context}: not {prop}: {shown}")
