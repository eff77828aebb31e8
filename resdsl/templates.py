"""User shortcut policies as IR templates, and their instantiation inside a block.

Lowering turns each `policy name(channels, stride) { layers }` of the program into a
`PolicyTemplate` on the graph (`Graph.policies`); `passes.shortcuts` instantiates one where a
block's shapes differ, with the block's output channels and stride, without re-entering the
front end. Its layers are checked as they are instantiated, so a policy no block needs is never
an error, and every message points at the policy's own text.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ast
from .attributes import layer_attrs, unknown_layer
from .diagnostics import ResdslError, Span
from .ir import PROJECTION, Graph
from .labels import Labeler, Names
from .ops import JOINS, LAYER, OPS


@dataclass(frozen=True)
class TemplateLayer:
    """One layer of a policy: its label (`downsample.KEY`, or None), op, the arguments as written
    (expressions of the policy's parameters) and where."""
    label: str | None
    op: str
    args: tuple[ast.Arg, ...]
    span: Span
    op_span: Span


@dataclass(frozen=True)
class PolicyTemplate:
    """A user policy: its parameters (output channels, stride), its chain of layers."""
    name: str
    params: tuple[ast.Param, ...]
    layers: tuple[TemplateLayer, ...]
    span: Span

    @classmethod
    def of(cls, policy: ast.PolicyDef) -> PolicyTemplate:
        layers = tuple(TemplateLayer(layer.label, layer.op, layer.args, layer.span, layer.op_span)
                       for layer in policy.body)  # a join among them is refused when inserted
        return cls(policy.name, policy.params, layers, policy.span)


def instantiate(graph: Graph, policy: PolicyTemplate, scope: str, source: str, channels: int,
                stride: int) -> str:
    """`policy`'s layers inside block `scope`, reading `source`, for `channels` output channels
    and `stride`; returns its last node. Each has role PROJECTION. Its layers are named
    `downsample.*`, as torchvision's and timm's shortcut modules are."""
    labeler, used = Labeler(inserting=True), Names()
    used.update(graph.node(n).label for n in graph.scope_nodes(scope))
    env = {policy.params[0].name: channels, policy.params[1].name: stride}
    checked: set[str] = set()
    current = source
    for layer in policy.layers:
        _check_layer(layer)
        current = _insert(graph, layer, scope, current, env, labeler, used, checked)
    if current == source:
        raise ResdslError(
            f"policy `{policy.name}` has no layers", policy.span, hint="give it at least one layer"
        )
    return current


def _check_layer(layer: TemplateLayer) -> None:
    if layer.label is not None and not layer.label.startswith("downsample."):
        raise ResdslError(f"a policy's layers are named `downsample.*`, not `{layer.label}`", layer.span,
                          hint="the block keeps its shortcut module as `downsample`, as torchvision does")
    if layer.label is not None and layer.label.count(".") > 1:  # keys of one nn.Sequential
        raise ResdslError(f"a policy's layers are named `downsample.KEY`, with no `.` in KEY: not "
                          f"`{layer.label}`", layer.span,
                          hint="its layers are one nn.Sequential: `downsample.0`, `downsample.conv`, ...")
    if layer.op in JOINS:
        raise ResdslError(f"`{layer.op}` cannot be part of a shortcut policy", layer.span,
                          hint="a policy is a chain of layers applied to the shortcut")


def _insert(graph: Graph, layer: TemplateLayer, scope: str, current: str, env: dict[str, int],
            labeler: Labeler, used: Names, checked: set[str]) -> str:
    if layer.op in env:  # a parameter where the op goes: it holds a number, never a layer kind
        raise ResdslError(f"`{layer.op}` is {env[layer.op]!r} here, a number, not a layer kind", layer.op_span,
                          hint="a parameter stands for a layer where its default is a kind (`act = relu`)")
    info = OPS.get(layer.op)
    if info is None or info.kind != LAYER:
        raise unknown_layer(layer.op, layer.op_span)
    exprs: dict[str, ast.Expr] = {}
    attrs = layer_attrs(layer, info, env, exprs, checked)  # type: ignore[arg-type]
    label = labeler.label(layer.label, "" if layer.label else "downsample.", used, layer.span, scope, layer.op)
    return graph.add(f"{scope}.{label}", layer.op, [current], span=layer.span, scope=scope, label=label,
                     exprs=exprs, branch="", role=PROJECTION, **attrs)
