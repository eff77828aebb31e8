"""Decomposition: composite forms rewritten into primitive ops, so each backend lowers them once.

Requires and provides: shapes and legal adds. Each original node keeps its name (so its users,
the block's output, the network's outputs and its state_dict keys stay what they were):
  gated add     `add(F, x, z)`, the highway mix T * F + (1 - T) * x with T = sigmoid(z), becomes
                  NAME.t = sigmoid(z); NAME.diff = sub(F, x); NAME.mix = mul(NAME.diff, NAME.t);
                  NAME = add(NAME.mix, x)
                that is x + T * (F - x): one multiply and no constant fewer, equal within float32
                rounding. The gate conv (z) is untouched; the add keeps its policy, `gated` False.
  fc on a map   an `fc` reading a (C, H, W) map reads `NAME.flatten` of it (PyTorch's (C, H, W)
                order); the fc keeps its weights, whose shape is the same either way.
Inserted nodes are named after the node they serve, with a numeric suffix where that is taken,
and share its scope, span and branch, so the rewrite is deterministic and an error about one
points at the statement it came from. Idempotent: a decomposed graph has nothing to rewrite.

Backends choose their legalization, as TVM's do: ONNX and Relax lower the decomposed graph (on a
copy: `on_a_copy`); the torch backend generates readable source from the graph as written
(`t * F + (1 - t) * x`, `torch.flatten` before the Linear), so it does not run this pass.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..ir import Graph
from ..ops import OPS
from .manager import Pass, PassManager
from .properties import LEGAL_ADDS, SHAPES

# No composite form is left. Not yet among properties.CHECKS (so the pass manager does not check
# it): `composites` is its check.
DECOMPOSED = "decomposed"


def composites(graph: Graph) -> list[str]:
    """Every composite form in `graph`, one line each: what DECOMPOSED rules out."""
    problems = []
    for name in graph.order():
        node = graph.node(name)
        if node.op == "add" and node.attrs.get("gated"):
            problems.append(f"{name}: a gated add")
        elif node.op == "fc" and _reads_a_map(graph, name):
            problems.append(f"{name}: an fc reading a feature map")
    return problems


class Decompose:
    name = "decompose"
    requires = frozenset({SHAPES, LEGAL_ADDS})
    provides = frozenset({SHAPES, LEGAL_ADDS, DECOMPOSED})

    def run(self, graph: Graph) -> bool:
        changed = False
        for name in graph.order():
            node = graph.node(name)
            if node.op == "add" and node.attrs.get("gated"):
                _mix(graph, name)
                changed = True
            elif node.op == "fc" and _reads_a_map(graph, name):
                graph.set_input(name, 0, _insert(graph, name, "flatten", "flatten", graph.inputs(name)))
                changed = True
        return changed


def on_a_copy(graph: Graph, passes: Iterable[Pass]) -> Graph:
    """A copy of `graph` after `passes`, run under the pass manager; `graph` itself is left as
    it was (the torch backend, and any later caller, still reads it)."""
    return PassManager(list(passes)).run(graph.copy())


def decomposed(graph: Graph) -> Graph:
    return on_a_copy(graph, [Decompose()])


def _reads_a_map(graph: Graph, name: str) -> bool:
    return len(graph.shape(graph.inputs(name)[0])) != 1


def _mix(graph: Graph, add: str) -> None:
    """Gated add -> x + T * (F - x), in place of `add`."""
    residual, shortcut, logits = graph.inputs(add)
    t = _insert(graph, add, "t", "sigmoid", [logits])
    diff = _insert(graph, add, "diff", "sub", [residual, shortcut])
    mix = _insert(graph, add, "mix", "mul", [diff, t])
    node = graph.node(add)
    node.attrs = {**node.attrs, "gated": False}
    graph.remove_input(add, 2)
    graph.set_input(add, 0, mix)


def _insert(graph: Graph, near: str, suffix: str, op: str, inputs: list[str], **attrs) -> str:
    """A node `NEAR.SUFFIX` (or `NEAR.SUFFIX_1`, ...) where `near` is, its shape from its op's rule."""
    node = graph.node(near)
    name, n = f"{near}.{suffix}", 0
    while name in graph:
        n += 1
        name = f"{near}.{suffix}_{n}"
    graph.add(name, op, inputs, span=node.span, scope=node.scope, label=node.label + name[len(near):],
              branch=node.branch, **attrs)
    graph.node(name).shape = OPS[op].shape(attrs, [graph.shape(i) for i in inputs])
    return name


__all__ = ["DECOMPOSED", "Decompose", "composites", "decomposed", "on_a_copy"]
