"""The graph IR as text: one line per node, for reading a pass's effect and for tests that
compare text, as MLIR's generic form and TVMScript are read and FileCheck'ed.

    graph two_stages(classes=10) {
      %<input> = input() {shape=(3, 16, 16)} : 3x16x16
      %conv1 = conv(%<input>) {out=8, kernel=3, padding=1} : 8x16x16
      ...
      stage layer2 {
        block layer2.0 = basic(width=16, stride=2) {
          %layer2.0.conv1 = conv(%layer1.1.act2) {out=16, kernel=3, stride=2, padding=1} : 16x8x8
          ...
          %layer2.0.downsample.0 = conv(%layer1.1.act2) {out=16, stride=2} : 16x8x8 role=projection
          %layer2.0.downsample.1 = bn(%layer2.0.downsample.0) : 16x8x8 role=projection
          %layer2.0.add = add(%layer2.0.bn2, %layer2.0.downsample.1) {policy="B", ...} : 16x8x8
          %layer2.0.act2 = relu(%layer2.0.add) : 16x8x8
        }
        ...
      }
      %avgpool = avgpool(%layer2.1.act2) : 16x1x1
      %fc = fc(%avgpool) {out=10} : 10
      return %fc
    }

A line is `%NAME = OP(OPERANDS) {ATTRS} : SHAPE role=ROLE branch=BRANCH`, in graph order (the
topological order, ties by creation). Attributes are those that differ from the op
definition's default, in the definition's order; an attribute the definition does not declare
(the compiler's own, such as an add's `policy`) follows in the node's order unless it is None or
false. `: SHAPE` is left out before shape inference; `role=` and `branch=` where the node has
them. Blocks nest in their stage, in braces, as the backends lay them out. Spans are left out
unless asked for (`locations=True`: a trailing `loc("file":line:col)`), so the text does not
depend on where a spec lives. The text is a view, not a format to parse back.
"""
from __future__ import annotations

from typing import Any

from .ir import Graph, Node
from .ops import OPS, fmt_shape

INDENT = "  "


def format_graph(graph: Graph, *, locations: bool = False) -> str:
    """`graph` as text, one line per node (see the module docstring); ends in a newline."""
    lines = [f"graph {graph.name}(classes={graph.classes}) {{"]
    stage = block = None
    for name in graph.order():
        node = graph.node(name)
        instance = graph.blocks.get(node.scope)
        here = (instance.stage, node.scope) if instance is not None else (None, None)
        if here[1] != block:
            if block is not None:
                lines.append(INDENT * 2 + "}")
            if here[0] != stage:
                if stage is not None:
                    lines.append(INDENT + "}")
                if here[0] is not None:
                    lines.append(f"{INDENT}stage {here[0]} {{")
            if instance is not None:
                lines.append(f"{INDENT * 2}block {node.scope} = {_call(instance.block, instance.args)} {{")
            stage, block = here
        depth = 3 if block is not None else 1
        lines.append(INDENT * depth + format_node(graph, name, locations=locations))
    if block is not None:
        lines.append(INDENT * 2 + "}")
    if stage is not None:
        lines.append(INDENT + "}")
    lines.append(INDENT + _results(graph))
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_node(graph: Graph, name: str, *, locations: bool = False) -> str:
    """One node's line: `%NAME = OP(OPERANDS) {ATTRS} : SHAPE role=ROLE branch=BRANCH`."""
    node = graph.node(name)
    operands = ", ".join(f"%{source}" for source in graph.inputs(name))
    attrs = format_attrs(node)
    span = node.span if locations else None
    parts = (f"%{name} = {node.op}({operands})",
             f"{{{attrs}}}" if attrs else "",
             f": {fmt_shape(node.shape)}" if node.shape is not None else "",
             f"role={node.role}" if node.role is not None else "",
             f"branch={node.branch}" if node.branch else "",
             f'loc("{span.file}":{span.line}:{span.column})' if span is not None else "")
    return " ".join(part for part in parts if part)


def format_attrs(node: Node) -> str:
    """`key=value, ...`: the attributes that differ from the op's defaults, in its schema's order,
    then those it does not declare (unless None or false), in the node's order."""
    definition = OPS.get(node.op)
    declared = definition.attrs if definition is not None else ()
    shown = [(a.name, node.attrs[a.name]) for a in declared
             if a.name in node.attrs and (a.default is None or node.attrs[a.name] != a.default)]
    known = {a.name for a in declared}
    shown += [(key, value) for key, value in node.attrs.items()
              if key not in known and value is not None and value is not False]
    return ", ".join(f"{key}={_value(value)}" for key, value in shown)


def _value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)  # round-trips: 1e-05, not a rounded 1e-5 that hides a typo
    return str(value)


def _call(block: str, args: dict[str, int]) -> str:
    return f"{block}(" + ", ".join(f"{key}={value}" for key, value in args.items()) + ")"


def _results(graph: Graph) -> str:
    if graph.outputs:
        return "return " + ", ".join(f"{name}=%{node}" for name, node in graph.outputs)
    return f"return %{graph.output}"


__all__ = ["format_attrs", "format_graph", "format_node"]
