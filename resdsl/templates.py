"""User shortcut policies as IR templates, and their instantiation inside a block.

Lowering turns each `policy name(channels, stride) { layers }` of the program into a
`PolicyTemplate` on the graph (`Graph.policies`); `passes.shortcuts` instantiates one where a
block's shapes differ, with the block's output channels and stride, without re-entering the
front end. Its layers are checked as they are instantiated, so a policy no block needs is never
an error, and every message points at the policy's own text.

A policy's layers are keys of one container, the module the block is handed and keeps under the
container's name: `downsample.0` (torchvision's ResNet, timm's), `proj.0` (torchvision's RegNet).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ast
from .attributes import layer_attrs, unknown_layer
from .diagnostics import ResdslError, Span
from .ir import PROJECTION, Graph
from .labels import Labeler, Names
from .ops import JOINS, LAYER, OPS
from .reserved import DEFAULT_SHORTCUT, GENERATED


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

    @property
    def container(self) -> str:
        """The module its layers are keys of, named by its first labelled layer (`proj.0` ->
        proj); `downsample` where none is labelled."""
        first = next((layer.label for layer in self.layers if layer.label is not None), None)
        return first.split(".")[0] if first and "." in first else DEFAULT_SHORTCUT


def instantiate(graph: Graph, policy: PolicyTemplate, scope: str, source: str, channels: int,
                stride: int) -> str:
    """`policy`'s layers inside block `scope`, reading `source`, for `channels` output channels
    and `stride`; returns its last node. Each has role PROJECTION. Its layers are keys of the
    policy's container (`downsample.*` unless it names another), which none of the block's own
    layers may use."""
    labeler, used = Labeler(inserting=True), Names()
    labels = [graph.node(n).label for n in graph.scope_nodes(scope)]
    used.update(labels)
    own = [graph.node(n).label for n in graph.scope_nodes(scope) if graph.node(n).role != PROJECTION]
    env = {policy.params[0].name: channels, policy.params[1].name: stride}
    checked: set[str] = set()
    current, container = source, policy.container
    for layer in policy.layers:
        _check_layer(layer, container, own)
        current = _insert(graph, layer, scope, current, env, labeler, used, checked, container)
    if current == source:
        raise ResdslError(
            f"policy `{policy.name}` has no layers", policy.span, hint="give it at least one layer"
        )
    return current


def _check_layer(layer: TemplateLayer, container: str, own: list[str]) -> None:
    label = layer.label
    if label is not None and "." not in label:
        raise ResdslError(f"a policy's layers are keys of one container, `{container}.KEY`: not `{label}`",
                          layer.span, hint=f"the block keeps its shortcut module as one attribute: "
                                           f"`{container}.{label}`")
    if label is not None and not label.startswith(container + "."):
        raise ResdslError(f"a policy's layers are keys of one container: `{label}` is not in `{container}`, "
                          f"its first layer's", layer.span,
                          hint=f"the block keeps its shortcut as one module: `{container}.{label.split('.', 1)[1]}`")
    if label is not None and label.count(".") > 1:  # keys of one nn.Sequential
        raise ResdslError(f"a policy's layers are named `{container}.KEY`, with no `.` in KEY: not "
                          f"`{label}`", layer.span,
                          hint=f"its layers are one nn.Sequential: `{container}.0`, `{container}.conv`, ...")
    if container != DEFAULT_SHORTCUT and (not container.isidentifier() or container in GENERATED):
        raise ResdslError(f"`{container}` cannot hold a policy's layers: the block takes its shortcut as a "
                          f"parameter of that name", layer.span, hint="name the container like a layer (`proj.0`)")
    taken = next((mine for mine in own if mine.split(".")[0] == container), None)
    if taken is not None:
        raise ResdslError(f"the policy's container `{container}` is the block's own: it holds `{taken}`",
                          layer.span, hint="name the policy's layers in another container (`proj.0`)")
    if layer.op in JOINS:
        raise ResdslError(f"`{layer.op}` cannot be part of a shortcut policy", layer.span,
                          hint="a policy is a chain of layers applied to the shortcut")


def _insert(graph: Graph, layer: TemplateLayer, scope: str, current: str, env: dict[str, int],
            labeler: Labeler, used: Names, checked: set[str], container: str) -> str:
    if layer.op in env:  # a parameter where the op goes: it holds a number, never a layer kind
        raise ResdslError(f"`{layer.op}` is {env[layer.op]!r} here, a number, not a layer kind", layer.op_span,
                          hint="a parameter stands for a layer where its default is a kind (`act = relu`)")
    info = OPS.get(layer.op)
    if info is None or info.kind != LAYER:
        raise unknown_layer(layer.op, layer.op_span)
    exprs: dict[str, ast.Expr] = {}
    attrs = layer_attrs(layer, info, env, exprs, checked)  # type: ignore[arg-type]
    label = labeler.label(layer.label, "" if layer.label else container + ".", used, layer.span, scope, layer.op)
    return graph.add(f"{scope}.{label}", layer.op, [current], span=layer.span, scope=scope, label=label,
                     exprs=exprs, branch="", role=PROJECTION, **attrs)
