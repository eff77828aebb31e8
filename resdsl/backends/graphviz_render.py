"""Graph -> a Graphviz picture: stages as clusters, tensor shapes on edges, shortcuts marked.

Inserted projections are orange, option-A zero-pads yellow, highway gates purple; shortcut
edges are dashed, residual adds are circles. `collapse=True` draws each stage's first block and
one of its repeated blocks, labelled with the repeat count, so ResNet-1202 fits on a page.
"""
from __future__ import annotations

from ..ir import GATE, INPUT, PAD, PROJECTION, Graph
from ..ops import fmt_shape
from ..ops.rules import channel_kernel
from ..ops.schema import hw, pair_text

STYLE = {
    "input": {"shape": "oval", "style": "filled", "fillcolor": "#dddddd"},
    "conv": {"shape": "box", "style": "rounded,filled", "fillcolor": "#cfe2ff"},
    "bn": {"shape": "box", "style": "rounded,filled", "fillcolor": "#e8f5e9"},
    "gn": {"shape": "box", "style": "rounded,filled", "fillcolor": "#e8f5e9"},
    "ln": {"shape": "box", "style": "rounded,filled", "fillcolor": "#e8f5e9"},
    "relu": {"shape": "box", "style": "rounded,filled", "fillcolor": "#fff8e1"},
    "maxpool": {"shape": "box", "style": "rounded,filled", "fillcolor": "#eeeeee"},
    "avgpool": {"shape": "box", "style": "rounded,filled", "fillcolor": "#eeeeee"},
    "blurpool": {"shape": "box", "style": "rounded,filled", "fillcolor": "#eeeeee"},
    "channel_conv": {"shape": "box", "style": "rounded,filled", "fillcolor": "#cfe2ff"},
    "fc": {"shape": "box", "style": "rounded,filled", "fillcolor": "#f3e5f5"},
    "linear": {"shape": "box", "style": "rounded,filled", "fillcolor": "#f3e5f5"},
    "add": {"shape": "circle", "style": "filled", "fillcolor": "white", "width": "0.35", "fixedsize": "true"},
}
OTHER = {"shape": "box", "style": "rounded,filled", "fillcolor": "#f5f5f5"}  # activations, dropout, ...
PROJECTION_STYLE = {"style": "rounded,filled,bold", "fillcolor": "#ffb74d"}
ZERO_PAD_STYLE = {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": "#fff59d"}
GATE_STYLE = {"style": "rounded,filled,bold", "fillcolor": "#ce93d8"}


def _window(kernel: int | tuple[int, int]) -> str:
    """`3x3`, or a (height, width) kernel's `1x7`."""
    return "x".join(map(str, hw(kernel)))


def describe(graph: Graph, name: str) -> str:
    node = graph.node(name)
    a, op = node.attrs, node.op
    if op == "conv":
        text = f"conv {_window(a['kernel'])}, {a['out']}"
        text += f", /{pair_text(a['stride'])}" if a["stride"] != 1 else ""
        text += f", g{a['groups']}" if a["groups"] != 1 else ""
    elif op in ("maxpool", "avgpool") and a["kernel"]:
        text = f"{op} {_window(a['kernel'])}, /{pair_text(a['stride'])}"
    elif op == "avgpool" and a["size"] != 1:
        text = f"avgpool to {a['size']}x{a['size']}"
    elif op == "gn":
        text = f"gn, {a['groups']} group" + ("s" if a["groups"] != 1 else "")
    elif op == "chunk":
        text = f"chunk {a['index']} of {a['n']}"
    elif op == "shuffle":
        text = f"channel shuffle, {a['groups']} groups"
    elif op == "select":  # its last operand the logits
        text = f"softmax-weighted sum of {len(graph.inputs(name)) - 1}"
    elif op == "blurpool":
        text = f"blur {a['kernel']}x{a['kernel']}, /{a['stride']}"
    elif op == "channel_conv":  # ECA's size (kernel 0) shown as the size it is
        text = f"conv1d across C, k{channel_kernel(a, [graph.shape(graph.inputs(name)[0])])}"
    elif op == "ln":
        text = "layer norm over C"
    elif op == "linear":  # at every pixel of a map
        text = f"linear {a['out']}" + (" per pixel" if len(node.shape) == 3 else "")
    elif op == "scale":
        text = "scale per channel"
    elif op == "dropout":
        text = f"dropout {a['p']:g}"
    elif op == "fc":
        text = f"fc {a['out']}"
    elif op == "add":
        return "σ⊕" if a["gated"] else "+"
    elif op == "pad":
        text = f"zero-pad +{a['pad_before'] + a['pad_after']}ch" + (
            f", /{a['stride']}" if a["stride"] != 1 else ""
        )
    elif op == "input":
        return f"input {fmt_shape(node.shape)}"
    else:
        text = op
    return f"{node.label}\n{text}" if node.label not in (op, "shortcut") else text


def _attrs(graph: Graph, name: str) -> dict[str, str]:
    node = graph.node(name)
    role = node.role
    if role == PROJECTION:
        return {**STYLE.get(node.op, OTHER), **PROJECTION_STYLE}
    if role == PAD:
        return ZERO_PAD_STYLE
    if role == GATE:
        return {**STYLE.get(node.op, OTHER), **GATE_STYLE}
    return STYLE.get(node.op, OTHER)


def _shortcut(graph: Graph, source: str, target: str) -> bool:
    """Is the edge part of a shortcut path (into an add's operand 1/2, or off the block input)?"""
    target_node = graph.node(target)
    if target_node.role is not None:  # a node shortcut legalization inserted
        return True
    if target_node.op == "add":
        return graph.inputs(target).index(source) > 0
    return False


def to_dot(graph: Graph, collapse: bool = False):
    import graphviz
    dot = graphviz.Digraph(graph.name, graph_attr={"rankdir": "TB", "fontname": "Helvetica", "label":
                                                   f"{graph.name} ({'collapsed' if collapse else 'full'})",
                                                   "labelloc": "t", "nodesep": "0.25", "ranksep": "0.3"},
                           node_attr={"fontname": "Helvetica", "fontsize": "10"},
                           edge_attr={"fontname": "Helvetica", "fontsize": "8"})
    shown = _visible(graph, collapse)
    visible = set(shown)
    scopes = {graph.node(n).scope for n in shown}
    members: dict[str, list[str]] = {}
    for name in shown:
        members.setdefault(graph.node(name).scope, []).append(name)
    cluster_of = {}
    for stage in graph.stages.values():
        paths = [p for p in stage.blocks if p in scopes]
        # Clusters are built apart and added whole: graphviz's `with dot.subgraph()` copies the
        # parent's body on entry, which is quadratic in the number of blocks.
        sub = graphviz.Digraph(name=f"cluster_{stage.name}")
        sub.attr(label=f"stage {stage.name}: {len(stage.blocks)} x {graph.blocks[stage.blocks[0]].block}",
                 style="rounded", color="#90a4ae")
        for path in paths:
            block = graphviz.Digraph(name=f"cluster_{path}")
            block.attr(label=_block_label(graph, stage, path, collapse), style="dashed", color="#b0bec5")
            for name in members[path]:
                cluster_of[name] = path
                block.node(name, describe(graph, name), **_attrs(graph, name))
            sub.subgraph(block)
        dot.subgraph(sub)
    for name in shown:
        if name not in cluster_of:
            dot.node(name, describe(graph, name), **_attrs(graph, name))
    for name in shown:
        for source in graph.inputs(name):
            source = _representative(graph, source, visible)
            edge = {"label": fmt_shape(graph.shape(source))}
            if _shortcut(graph, source, name):
                edge.update(style="dashed", color="#e65100", penwidth="1.5")
            dot.edge(source, name, **edge)
    return dot


def _block_label(graph: Graph, stage, path: str, collapse: bool) -> str:
    index = graph.blocks[path].index
    if collapse and index == 1 and len(stage.blocks) > 2:
        return f"{path} … {stage.blocks[-1]} (x {len(stage.blocks) - 1})"
    return path


def _visible(graph: Graph, collapse: bool) -> list[str]:
    if not collapse:
        return graph.order()
    keep = {p for s in graph.stages.values() for p in s.blocks[:2]}
    return [n for n in graph.order() if not graph.node(n).scope or graph.node(n).scope in keep]


def _representative(graph: Graph, source: str, shown: set[str]) -> str:
    """In collapsed pictures an edge from a hidden block comes from the stage's shown repeat."""
    if source in shown or source == INPUT:
        return source
    block = graph.blocks[graph.node(source).scope]
    return graph.blocks[graph.stages[block.stage].blocks[1]].output
