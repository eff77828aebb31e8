"""A class's containers: dotted labels (`se.fc1`) nested as modules, a run of layers keyed
0..n-1 written as one nn.Sequential, and the forward statements that reach each layer."""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from ...ir import Graph
from .lines import Nested, call, sequential_of, stage_sequential


@dataclass
class Step:
    """One statement of a forward: the lines that run it, `{m}` standing for its module (reached
    through its containers), and, for a plain call `OUT = {m}(ARG)`, its parts, so that a run of
    them can become one nn.Sequential call."""
    label: str | None
    lines: list[str]
    name: str  # its graph node
    source: str  # the node it reads
    call: tuple[str, str] | None = None  # (OUT, ARG) of a plain call
    scope: str | None = None  # a block's path: the nodes it runs are its (a block called as a layer)
    # A layer over the channels at each pixel (`ln`, `linear`): its (OUT, ARG), called on the map
    # channels-last, or an elementwise one that may run on either layout, for `_channels_last`.
    per_pixel: tuple[str, str] | None = None
    elementwise: bool = False

    def runs(self, graph: Graph, node: str) -> bool:
        """Whether `node` is computed by this step."""
        return node == self.name or (self.scope is not None and graph.node(node).scope == self.scope)


def layer_step(label: str, op: str, name: str, source: str, arg: str, out: str, in_shape: tuple) -> Step:
    if op == "fc" and len(in_shape) == 3:
        return Step(label, [f"{out} = torch.flatten({arg}, 1)", f"{out} = {{m}}({out})"], name, source)
    if op == "channel_conv":  # nn.Conv1d across the channels: the Cx1x1 vector as (N, 1, C), as timm's ECA
        return Step(label, [f"{out} = {{m}}({arg}.view({arg}.shape[0], 1, -1)).view_as({arg})"], name, source)
    if op in ("ln", "linear") and len(in_shape) == 3:  # over the channels at each pixel: channels last
        return Step(label, [f"{out} = {{m}}({arg}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"], name, source,
                    per_pixel=(out, arg))
    if op == "scale":  # a parameter, (C,) or (C, 1, 1): one factor per channel
        factor = "{m}.view(-1, 1, 1)" if len(in_shape) == 3 else "{m}"
        return Step(label, [f"{out} = {arg} * {factor}"], name, source)
    return Step(label, [f"{out} = {{m}}({arg})"], name, source, (out, arg), elementwise=op in ELEMENTWISE)


# Ops that compute each element alone (the same on a channels-last map) and keep the shape.
ELEMENTWISE = frozenset({"relu", "relu6", "leaky_relu", "sigmoid", "silu", "gelu", "hardsigmoid", "hardswish",
                         "dropout", "drop_path"})


def assemble(
    graph: Graph, entries: list[tuple[str, str, list[str]]], steps: list[Step]
) -> tuple[list, list]:
    """A class's `__init__` and `forward` lines from its layers, nesting dotted labels. An entry
    is (label, constructor, arguments), or ("", "", lines) for lines to write as they are.

    `conv1.0`, `conv1.1`, ... that run one after the other, each reading the one before, become
    one nn.Sequential (`self.conv1 = nn.Sequential(...)`, called once), as torchvision writes
    `features` and `classifier`. Other containers hold their layers as attributes (`self.se.fc1`),
    or by key where a key is not an identifier (`self.head["0"]`).
    """
    layout = _Layout(graph, entries, steps)
    return layout.init(entries), layout.forward(steps)


class _Layout:
    """The containers a class's dotted labels make, and which of them are nn.Sequential."""

    def __init__(self, graph: Graph, entries: list[tuple[str, str, list[str]]], steps: list[Step]) -> None:
        self.graph = graph
        self.containers: dict[str, list[str]] = {}  # container path -> its direct children's keys
        for label, _, _ in entries:
            parts = label.split(".") if label else []
            for i in range(1, len(parts)):
                keys = self.containers.setdefault(".".join(parts[:i]), [])
                if parts[i] not in keys:
                    keys.append(parts[i])
        stages = {label for label, ctor, _ in entries if ctor == STAGE}
        self.parameters = {label for label, ctor, _ in entries if ctor == "nn.Parameter"}  # `scale`'s
        self.sequential = _sequential(graph, self.containers, steps, stages)

    def reach(self, path: str) -> str:
        """The expression that reaches a layer from `self`: `self.se.fc1`, `self.head["0"]`,
        `getattr(self, "0")` (a block's own position, as an nn.Sequential subclass's)."""
        parts = path.split(".")
        text = "self" + (f".{parts[0]}" if parts[0].isidentifier() else f', "{parts[0]}"')
        if not parts[0].isidentifier():
            text = f"getattr({text})"
        for i, part in enumerate(parts[1:], 1):
            parent = ".".join(parts[:i])
            keyed = parent in self.containers and _keyed(self.containers[parent])
            if keyed and path in self.parameters and i == len(parts) - 1:  # nn.ModuleDict holds no parameter
                text = f'getattr({text}, "{part}")'
            else:
                text += f'["{part}"]' if keyed else f".{part}"
        return text

    def sequential_ctor(self, path: str, ctors: dict[str, tuple[str, list[str]]]) -> tuple[str, Nested]:
        """A sequential container's constructor: nn.Sequential of its children, nested ones inline."""
        return "nn.Sequential", Nested(
            self.sequential_ctor(f"{path}.{key}", ctors) if f"{path}.{key}" in self.sequential
            else ctors[f"{path}.{key}"] for key in self.containers[path])

    def inside(self, path: str) -> list[str]:
        """Every layer and container within container `path`."""
        found = []
        for key in self.containers[path]:
            child = f"{path}.{key}"
            found += [child, *(self.inside(child) if child in self.containers else ())]
        return found

    def outermost(self, label: str) -> str | None:
        """The outermost sequential container holding `label`."""
        parts = label.split(".")
        return next((p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in self.sequential), None)

    def init(self, entries: list[tuple[str, str, list[str]]]) -> list[str]:
        """Each container made before its first layer, each layer once (a sequential container's
        layers all at once, as its nn.Sequential)."""
        ctors = {label: (ctor, args) for label, ctor, args in entries if label}
        init: list[str] = []
        made: set[str] = set()
        for label, _, raw in entries:
            if not label:  # lines written elsewhere (a stage's nn.Sequential of blocks)
                init += raw
                continue
            parts = label.split(".")
            for i in range(1, len(parts)):
                path = ".".join(parts[:i])
                if path in made:
                    continue
                made.add(path)
                if path in self.sequential:
                    keys = self.containers[path]
                    init += _assign(sequential_of(self.reach(path), [
                        self.sequential_ctor(f"{path}.{key}", ctors) if f"{path}.{key}" in self.sequential
                        else ctors[f"{path}.{key}"] for key in keys]))
                    made.update(self.inside(path))
                    break
                container = "nn.ModuleDict()" if _keyed(self.containers[path]) else "nn.Module()"
                init += _assign([f"{self.reach(path)} = {container}"])
            if label not in made:
                made.add(label)
                init += _assign(self._construct(label, *ctors[label]))
        return init

    def _construct(self, label: str, ctor: str, args: list) -> list[str]:
        if ctor == STAGE:
            return stage_sequential(self.reach(label), args)
        return call(f"{self.reach(label)} = {ctor}", args, 8)

    def forward(self, steps: list[Step]) -> list[str]:
        """The steps' lines, `{m}` replaced by how each reaches its module; a sequential
        container's steps one call of it."""
        forward: list[str] = []
        i = 0
        while i < len(steps):
            step = steps[i]
            outer = self.outermost(step.label) if step.label else None
            if outer is not None:
                n = 1
                while i + n < len(steps) and (steps[i + n].label or "").startswith(outer + "."):
                    n += 1
                forward.append(f"{steps[i + n - 1].call[0]} = {self.reach(outer)}({step.call[1]})")
                i += n
                continue
            run = _channels_last(self.graph, steps, i)
            if run > 1:  # one permute there and one back, as ConvNeXt's block writes its MLP
                first, last = steps[i].per_pixel, steps[i + run - 1].per_pixel
                forward.append(f"{first[0]} = {first[1]}.permute(0, 2, 3, 1)")
                forward += [f"{s.per_pixel[0] if s.per_pixel else s.call[0]} = {self.reach(s.label)}({first[0]})"
                            for s in steps[i:i + run]]
                forward.append(f"{last[0]} = {first[0]}.permute(0, 3, 1, 2)")
                i += run
                continue
            reach = self.reach(step.label) if step.label else ""
            forward += [line.replace("{m}", reach) if step.label else line for line in step.lines]
            i += 1
        return forward


STAGE = "<stage>"  # an entry's constructor: the stage's blocks, as one nn.Sequential


def _channels_last(graph: Graph, steps: list[Step], i: int) -> int:
    """How many steps from `i` run channels-last with one permute before and one after: per-pixel
    layers and elementwise ones between them, each reading only the one before, all writing one
    variable; at least two per-pixel layers, the run starting and ending with one."""
    if steps[i].per_pixel is None or len(steps[i].lines) > 1:  # more lines: a value returned from there
        return 0
    out, end, j = steps[i].per_pixel[0], i, i + 1
    while j < len(steps) and (steps[j].per_pixel or steps[j].elementwise) and steps[j].label:
        a, b = steps[j - 1], steps[j]
        io = b.per_pixel or b.call
        if b.source != a.name or graph.users(a.name) != [b.name] or io != (out, out) or len(b.lines) > 1:
            break
        end = j if b.per_pixel else end
        j += 1
    runs = [s for s in steps[i:end + 1] if s.per_pixel]
    return end - i + 1 if len(runs) > 1 else 0


def _keyed(keys: list[str]) -> bool:
    """Whether a container's children need keys (`["0"]`) rather than attribute names."""
    return any(not k.isidentifier() for k in keys)


_BY_NAME = re.compile(r'getattr\((.+), ("[^"]*")\) = ')


def _assign(lines: list[str]) -> list[str]:
    """`getattr(X, "0") = V` (a key no attribute can name, or a parameter in an nn.ModuleDict)
    as `X.add_module("0", V)`, or `X.register_parameter("0", V)` for a parameter."""
    target = _BY_NAME.match(lines[0])
    if target is None:  # `getattr(self, "0").conv = ...` sets an attribute of it: valid as it is
        return lines
    value = lines[0][target.end():]
    method = "register_parameter" if value.startswith("nn.Parameter(") else "add_module"
    first = f"{target[1]}.{method}({target[2]}, {value}"
    return [first + ")"] if len(lines) == 1 else [first, *lines[1:-1], lines[-1] + ")"]


def _sequential(graph: Graph, containers: dict[str, list[str]], steps: list[Step], stages: set[str]) -> set[str]:
    """The containers an nn.Sequential computes exactly: children keyed 0..n-1 (layers, blocks,
    or sequential containers themselves) whose steps run one after the other, each reading only
    the one before and read only by the next. Decided innermost first, so they nest
    (torchvision's `features` holds `features.0`, itself a Sequential)."""
    at = {step.label: i for i, step in enumerate(steps) if step.label}
    spans: dict[str, tuple[int, int]] = {}  # a child -> the first and last of its steps
    sequential: set[str] = set()
    for container in sorted(containers, key=lambda c: -c.count(".")):
        keys = containers[container]
        if keys != [str(i) for i in range(len(keys))] or any(f"{container}.{k}" in stages for k in keys):
            continue
        units = []
        for key in keys:
            child = f"{container}.{key}"
            if child in sequential:
                units.append(spans[child])
            elif child in at and child not in containers and steps[at[child]].call is not None:
                units.append((at[child], at[child]))
            else:
                break
        if len(units) == len(keys) and _chained(graph, steps, units):
            sequential.add(container)
            spans[container] = (units[0][0], units[-1][1])
    return sequential


def _chained(graph: Graph, steps: list[Step], units: list[tuple[int, int]]) -> bool:
    """Whether the units' steps are contiguous and each unit reads only the one before, whose
    result nothing else reads."""
    for (_, last), (first, end) in pairwise(units):
        if first != last + 1:
            return False
    for a, b in pairwise(steps[units[0][0]:units[-1][1] + 1]):
        if b.source != a.name or not all(b.runs(graph, user) for user in graph.users(a.name)):
            return False
    return True
