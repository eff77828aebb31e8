"""The graph IR: a networkx DiGraph of ops, with tensors as edges.

Node kinds: the `op` attribute names one of `ops.OPS`, whose definitions
(`resdsl/ops/definitions.py`) say what each means, which attributes (`attrs`) it takes with
their types and defaults, its shape rule and the tensors it owns. Besides those a spec can set,
the compiler's own ops carry: `input` its `shape`; `add` its `policy`, `gated` (operand 2 is then
the gate's pre-sigmoid logits) and `source` (what the shortcut reads); `pad` (option A's
shortcut) its `stride`, `pad_before` and `pad_after`.

A node is a `Node` (`Graph.node(name)`): its meaning is `op` and `attrs`; everything else is
metadata that no shape rule or backend computes with:
  `span`   where the user wrote it;
  `scope`  the block path such as `layer1.0`, or "" for stem and head;
  `label`  its name inside the scope; also its state_dict prefix;
  `seq`    creation order, for deterministic traversals;
  `exprs`  inside a block: the attributes the spec wrote as expressions, as `ast.Expr` of the
           block's parameters, so backends can emit `width * 4` where the integer 256 is all
           shapes need; `exprs["op"]` for a layer written as a block parameter (`act1: act`),
           that parameter as an `ast.Var`;
  `branch` the side path (`se`) a block's node belongs to, or "";
  `role`   see below;
  `shape`  after shape inference, (C, H, W) or (features,); None before;
  `facts`  what analyses record about the node (shortcut legalization's `legal`), by name.

`role` says why the compiler, not the user, put a node there: shortcut legalization
(`passes/shortcuts.py`) marks what it inserts, so no backend recognises its nodes by label:
  "projection"  the B/C projection (`downsample.0` conv, `downsample.1` bn) and every layer a
                user `policy` inserts;
  "pad"         option A's parameter-free zero-pad;
  "gate"        the highway gate conv of a `gated` add.
Every other node's role is None.
Edges carry `index`, the operand position. Analyses record facts on nodes; they never create
node types of their own.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from .ast import Expr
from .diagnostics import Span

INPUT = "<input>"  # not an identifier, so no user label can collide with it

# Roles of the nodes shortcut legalization inserts (see the module docstring).
PROJECTION, PAD, GATE = "projection", "pad", "gate"
ROLES = (PROJECTION, PAD, GATE)


@dataclass(slots=True)
class Node:
    """One op of the graph: `op` and `attrs` are its meaning, the rest metadata (see the module
    docstring). `graph.nx.nodes[name]` is this object too: networkx keeps it as the node's data."""
    op: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    span: Span | None = None
    scope: str = ""
    label: str = ""
    seq: int = 0
    exprs: dict[str, Expr] = field(default_factory=dict)
    branch: str = ""
    role: str | None = None
    shape: tuple[int, ...] | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> Node:
        """A copy whose attrs, exprs and facts dicts can be edited apart from this one's."""
        return Node(self.op, dict(self.attrs), self.span, self.scope, self.label, self.seq,
                    dict(self.exprs), self.branch, self.role, self.shape, dict(self.facts))


class _DiGraph(nx.DiGraph):
    """A DiGraph whose node data is a typed `Node`, not a dict. Nodes enter through `Graph.add`,
    which stores the Node itself: networkx's `add_node(n, **attrs)` and `add_nodes_from` would
    `update` a dict with keyword attributes, which a Node has no use for. Views and algorithms
    read the Nodes as they are; a copy copies each one."""
    node_attr_dict_factory = Node  # the empty node `add_edge` makes for a name it does not know

    def copy(self, as_view: bool = False) -> _DiGraph:
        """Nodes, adjacency and edge data new; each Node copied (networkx's copy would rebuild
        the node data through `add_nodes_from`)."""
        if as_view:
            return super().copy(as_view=True)
        g = self.__class__()
        g.graph.update(self.graph)
        for name, node in self._node.items():
            g._node[name] = node.copy()
            g._succ[name], g._pred[name] = {}, {}
        for source, users in self._succ.items():
            for user, data in users.items():
                g._succ[source][user] = g._pred[user][source] = dict(data)
        return g


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
    residual: bool | None = None  # under `shortcut identity_or_none`: whether its add was made


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
        self.policies: dict = {}  # user-defined shortcut policies (templates.PolicyTemplate), by name
        self.nx: nx.DiGraph = _DiGraph()
        # networkx's own node and adjacency dicts: the queries below are the compiler's innermost
        # loops, and its public views cost an object per lookup.
        self._nodes: dict[str, Node] = self.nx._node
        self._pred: dict[str, dict[str, dict]] = self.nx._pred
        self._succ: dict[str, dict[str, dict]] = self.nx._succ
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

    # ---- construction and edits: every edit goes through these, which drop the cached order
    def add(self, name: str, op: str, inputs: list[str], *, span: Span | None, scope: str = "",
            label: str | None = None, exprs: dict[str, Expr] | None = None, branch: str = "",
            role: str | None = None, **attrs: Any) -> str:
        """Add a node; `branch` names the side path (`se`) a block's node belongs to, if any;
        `role` marks a node a pass inserts (one of ROLES)."""
        assert name not in self.nx, name
        assert role is None or role in ROLES, role
        self._seq += 1
        self._order = None
        self._succ[name], self._pred[name] = {}, {}  # what nx.add_node does, less its dict update
        self._nodes[name] = Node(op, attrs, span, scope, label or name, self._seq, exprs or {}, branch, role)
        for index, source in enumerate(inputs):
            self.nx.add_edge(source, name, index=index)
        return name

    def set_input(self, node: str, index: int, source: str) -> None:
        """Re-point operand `index` of `node` at `source`."""
        self.remove_input(node, index)
        self.nx.add_edge(source, node, index=index)

    def remove_input(self, node: str, index: int) -> None:
        """Drop operand `index` of `node` (the last one: operands stay numbered 0..n-1)."""
        self._order = None
        for old, _, data in list(self.nx.in_edges(node, data=True)):
            if data["index"] == index:
                self.nx.remove_edge(old, node)

    def copy(self) -> Graph:
        """A copy to edit without touching this graph (a backend's own legalization runs on one):
        nodes, edges, blocks, stages and the layout are new; spans, expressions, signatures and
        policies, never edited, are shared. A fraction of deepcopy's time (ResNet-1202)."""
        new = Graph.__new__(Graph)
        new.__dict__.update(self.__dict__)
        new.nx = g = self.nx.copy()
        new._nodes, new._pred, new._succ = g._node, g._pred, g._succ
        new.blocks = {path: replace(b, args=dict(b.args)) for path, b in self.blocks.items()}
        new.stages = {name: Stage(stage.name, list(stage.blocks)) for name, stage in self.stages.items()}
        new.layout, new.outputs = list(self.layout), list(self.outputs)
        new._order = None if self._order is None else list(self._order)
        new._scopes, new._scopes_for = {}, None
        return new

    def remove(self, name: str) -> None:
        """Remove a node nobody reads any longer, with the edges into it."""
        assert not self._succ[name], f"{name} is still read by {sorted(self._succ[name])}"
        self._order = None
        self.nx.remove_node(name)

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

    def node(self, name: str) -> Node:
        return self._nodes[name]

    def inputs(self, name: str) -> list[str]:
        preds = self._pred[name]
        if len(preds) < 2:
            return list(preds)
        return sorted(preds, key=lambda source: preds[source]["index"])

    def users(self, name: str) -> list[str]:
        nodes = self._nodes
        return sorted(self._succ[name], key=lambda n: nodes[n].seq)

    def order(self) -> list[str]:
        """Topological order, ties broken by creation order (so traversals are deterministic).
        Raises networkx.NetworkXUnfeasible on a cycle."""
        if self._order is None:
            nodes = self._nodes
            self._order = list(nx.lexicographical_topological_sort(self.nx, key=lambda n: nodes[n].seq))
        return list(self._order)

    def sinks(self) -> list[str]:
        """The nodes no node reads, in order."""
        succ = self._succ
        return [n for n in self.order() if not succ[n]]

    def nodes_of(self, op: str) -> Iterator[str]:
        nodes = self._nodes
        return (n for n in self.order() if nodes[n].op == op)

    def scope_nodes(self, scope: str) -> list[str]:
        if self._order is None or self._scopes_for is not self._order:
            self.order()
            scopes: dict[str, list[str]] = {}
            for n in self._order:
                if n != INPUT:
                    scopes.setdefault(self._nodes[n].scope, []).append(n)
            self._scopes, self._scopes_for = scopes, self._order
        return list(self._scopes.get(scope, []))

    def shape(self, name: str) -> tuple[int, ...]:
        shape = self._nodes[name].shape
        if shape is None:
            raise KeyError(f"{name} has no shape: shapes are inferred by the infer-shapes pass")
        return shape
