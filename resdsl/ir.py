"""The graph IR: a networkx DiGraph of ops, with tensors as edges.

Node kinds: the `op` attribute names one of `ops.OPS`, whose definitions
(`resdsl/ops/definitions.py`) say what each means, which attributes (`attrs`) it takes with
their types and defaults, its shape rule and the tensors it owns. Besides those a spec can set,
the compiler's own ops carry: `input` its `shape`; `add` its `policy`, `gated` (operand 2 is then
the gate's pre-sigmoid logits) and `source` (what the shortcut reads); `pad` (option A's
shortcut) its `stride`, `pad_before` and `pad_after`.

Every node also carries: `span` (where the user wrote it), `scope` (the block path such as
`layer1.0`, or "" for stem and head), `label` (its name inside the scope; also its
state_dict prefix), `seq` (creation order, for deterministic traversals), `exprs` (inside a
block: the attributes the spec wrote as expressions, as `ast.Expr` of the block's parameters,
so backends can emit `width * 4` where the integer 256 is all shapes need) and, after shape
inference, `shape` (C, H, W) or (features,).

`role` says why the compiler, not the user, put a node there: shortcut legalization
(`passes/shortcuts.py`) marks what it inserts, so no backend recognises its nodes by label:
  "projection"  the B/C projection (`downsample.0` conv, `downsample.1` bn) and every layer a
                user `policy` inserts;
  "pad"         option A's parameter-free zero-pad;
  "gate"        the highway gate conv of a `gated` add.
Every other node's role is None.
Edges carry `index`, the operand position. Analyses add keys to node data; they never
create node types of their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx

from .ast import Expr
from .diagnostics import Span

INPUT = "<input>"  # not an identifier, so no user label can collide with it

# Roles of the nodes shortcut legalization inserts (see the module docstring).
PROJECTION, PAD, GATE = "projection", "pad", "gate"
ROLES = (PROJECTION, PAD, GATE)


@dataclass
class BlockInstance:
    path: str  # e.g. "layer2.0"
    block: str  # the block definition's name
    stage: str
    index: int
    input: str  # node feeding the block
    output: str = ""  # the block's last node
    span: Span | None = None  # the stage statement that created it
    args: dict[str, int] = field(default_factory=dict)  # its parameters' values, in declaration order


@dataclass(frozen=True)
class BlockSignature:
    """A block definition's name and parameters, each with its default (None: required); a
    default is an expression that may use earlier parameters. `lets` are the body's `let`s, in
    order, each an expression of the parameters and earlier lets."""
    name: str
    params: tuple[tuple[str, Expr | None], ...]
    lets: tuple[tuple[str, Expr], ...] = ()


@dataclass
class Stage:
    name: str
    blocks: list[str] = field(default_factory=list)  # block paths


class Graph:
    """A network: nodes in an nx.DiGraph plus the nesting the backends need (stages, blocks)."""

    def __init__(self, name: str, classes: int, classes_span: Span | None = None) -> None:
        self.name = name
        self.classes = classes
        self.classes_span = classes_span  # where the spec says it, for errors about the output
        self.policies: dict = {}  # user-defined shortcut policies (ast.PolicyDef), by name
        self.nx = nx.DiGraph()
        self.blocks: dict[str, BlockInstance] = {}
        self.signatures: dict[str, BlockSignature] = {}  # of every block used, by definition name
        # Top level in execution order: ("node", id) for stem/head layers, ("stage", name).
        self.layout: list[tuple[str, str]] = []
        self.stages: dict[str, Stage] = {}
        self.output: str = ""  # the last node; what the network returns unless `outputs` says
        self.outputs: list[tuple[str, str]] = []  # (name, node) of each named output, in order
        self._seq = 0
        self._order: list[str] | None = None  # cached topological order; reset on any edit
        self._scopes: dict[str, list[str]] = {}  # scope -> its nodes, in order; built from _order
        self._scopes_for: list[str] | None = None  # the _order that _scopes was built from

    # ---- construction
    def add(self, name: str, op: str, inputs: list[str], *, span: Span | None, scope: str = "",
            label: str | None = None, exprs: dict[str, Expr] | None = None, branch: str = "",
            role: str | None = None, **attrs: Any) -> str:
        """Add a node; `branch` names the side path (`se`) a block's node belongs to, if any;
        `role` marks a node a pass inserts (one of ROLES)."""
        assert name not in self.nx, name
        assert role is None or role in ROLES, role
        self._seq += 1
        self._order = None
        self.nx.add_node(name, op=op, span=span, scope=scope, label=label or name,
                         seq=self._seq, attrs=attrs, exprs=exprs or {}, branch=branch, role=role)
        for index, source in enumerate(inputs):
            self.nx.add_edge(source, name, index=index)
        return name

    def set_input(self, node: str, index: int, source: str) -> None:
        """Re-point operand `index` of `node` at `source`."""
        self._order = None
        for old, _, data in list(self.nx.in_edges(node, data=True)):
            if data["index"] == index:
                self.nx.remove_edge(old, node)
        self.nx.add_edge(source, node, index=index)

    # ---- queries
    def outputs_classes(self) -> bool:
        """Does the network end in a class vector (rather than a feature map, or named outputs)?"""
        return not self.outputs and len(self.shape(self.output)) == 1

    def results(self) -> list[tuple[str, str]]:
        """What the network returns: its named outputs, or its last node as `logits`/`features`."""
        if self.outputs:
            return list(self.outputs)
        return [("logits" if self.outputs_classes() else "features", self.output)]

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return len(self.nx)

    def node(self, name: str) -> dict[str, Any]:
        return self.nx.nodes[name]

    def inputs(self, name: str) -> list[str]:
        preds = self.nx.pred[name]
        if len(preds) < 2:
            return list(preds)
        return sorted(preds, key=lambda source: preds[source]["index"])

    def users(self, name: str) -> list[str]:
        return sorted(self.nx.successors(name), key=lambda n: self.nx.nodes[n]["seq"])

    def order(self) -> list[str]:
        """Topological order, ties broken by creation order (so traversals are deterministic)."""
        if self._order is None:
            seq = self.nx.nodes
            self._order = list(nx.lexicographical_topological_sort(self.nx, key=lambda n: seq[n]["seq"]))
        return list(self._order)

    def nodes_of(self, op: str) -> Iterator[str]:
        return (n for n in self.order() if self.nx.nodes[n]["op"] == op)

    def scope_nodes(self, scope: str) -> list[str]:
        if self._order is None or self._scopes_for is not self._order:
            self.order()
            scopes: dict[str, list[str]] = {}
            for n in self._order:
                if n != INPUT:
                    scopes.setdefault(self.nx.nodes[n]["scope"], []).append(n)
            self._scopes, self._scopes_for = scopes, self._order
        return list(self._scopes.get(scope, []))

    def shape(self, name: str) -> tuple[int, ...]:
        return self.nx.nodes[name]["shape"]
