"""The network's own class: its stem and head layers, each stage an nn.Sequential of the blocks'
classes, and the named outputs forward returns."""
from __future__ import annotations

from ...ir import INPUT, Graph
from ...ops import fmt_shape
from .classes import GeneratedClass, Generator
from .converters import CONVERTERS, Expression, Layer, module_call
from .layout import STAGE, Step, assemble, layer_step
from .names import camel
from .symbols import Sym


def network_class(gen: Generator) -> GeneratedClass:
    """The class `build` returns, made after `gen` has made the blocks' classes and calls."""
    g = gen.graph
    doc = f"{g.name}: {fmt_shape(g.shape(INPUT))} -> {describe_returned(g)}."
    cls = GeneratedClass(gen.names.create_name(camel(g.name)), doc, signature=["def __init__(self) -> None:"])
    entries, steps = [], []
    returned = {}  # node -> the output names it is returned as
    for name, node in g.outputs:
        returned.setdefault(node, []).append(name)
    shared = _shared_containers(g)
    for kind, item in g.layout:
        if kind == "stage" and item not in shared:  # an nn.Sequential of its blocks, under its name
            entries.append((item, STAGE, [gen.calls[p] for p in g.stages[item].blocks]))
            last = g.blocks[g.stages[item].blocks[-1]].output
            captured = _captures(returned.get(last, []))
            steps.append(
                Step(item, ["x = {m}(x)"] + captured, item, "", None if captured else ("x", "x"))
            )
            continue
        if kind == "stage":  # each block under its own path, nested as its label's containers
            for path in g.stages[item].blocks:
                block = g.blocks[path]
                entries.append((path, *gen.calls[path]))
                captured = _captures(returned.get(block.output, []))
                steps.append(Step(path, ["x = {m}(x)"] + captured, block.output, block.input,
                                  None if captured else ("x", "x"), scope=path))
            continue
        steps.append(_stem_or_head_step(g, item, entries, returned.get(item)))
    init, forward = assemble(g, entries, steps)
    cls.init += init
    if g.outputs:
        cls.returns = "dict[str, Tensor]"
        cls.forward = ["outputs: dict[str, Tensor] = {}"] + forward + ["return outputs"]
    else:
        cls.forward = forward + ["return x"]
    return cls


def _stem_or_head_step(g: Graph, item: str, entries: list, returned: list[str] | None) -> Step:
    """A stem or head layer's statement, and its module's entry where it has one (a chunk is an
    expression of `x`, as in a block)."""
    node, source = g.node(item), g.inputs(item)[0]
    layer = Layer(lambda key, a=node.attrs: Sym.literal(a[key]), Sym.literal(g.shape(source)[0]),
                  g.shape(source))
    converter = CONVERTERS[node.op]
    if isinstance(converter, Expression):
        step = Step(None, [f"x = {converter.write('x', layer, node.attrs)}"], item, source)
    else:
        entries.append((node.label, *module_call(g, node.op, layer, node.attrs, source)))
        step = layer_step(node.label, node.op, item, source, "x", "x", g.shape(source))
    if returned:  # kept apart from any nn.Sequential, to be returned
        step.lines, step.call = step.lines + _captures(returned), None
    return step


def _shared_containers(graph: Graph) -> set[str]:
    """The stages that are not an nn.Sequential of their own: a stage of one block (named by the
    label), one keyed by a pattern or numbered on after other layers in its container, or one
    whose container also holds stem or head layers (torchvision's flat `features`)."""
    labels = [graph.node(item).label for kind, item in graph.layout if kind == "node"]
    shared = set()
    for name, stage in graph.stages.items():
        plain = stage.blocks == [f"{name}.{i}" for i in range(len(stage.blocks))]
        if not plain or any(label.startswith(name + ".") for label in labels):
            shared.add(name)
    return shared


def describe_returned(graph: Graph) -> str:
    """What forward returns, for docstrings: `1000`, or `a dict of layer1, ..., layer4`."""
    if not graph.outputs:
        return fmt_shape(graph.shape(graph.output))
    names = ", ".join(name for name, _ in graph.outputs)
    return f"a dict of {names}" if len(names) <= 60 else f"a dict of {len(graph.outputs)} feature maps"


def _captures(names: list[str]) -> list[str]:
    return [f'outputs["{name}"] = x' for name in names]
