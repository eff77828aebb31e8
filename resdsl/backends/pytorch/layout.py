"""A class's containers: dotted labels (`se.fc1`) nested as modules, a run of layers keyed
0..n-1 written as one nn.Sequential, and the forward statements that reach each layer."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from ...ir import Graph
from .lines import call, sequential_of, stage_sequential


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


def layer_step(label: str, op: str, name: str, source: str, arg: str, out: str, in_shape: tuple) -> Step:
    if op == "fc" and len(in_shape) == 3:
        return Step(label, [f"{out} = torch.flatten({arg}, 1)", f"{out} = {{m}}({out})"], name, source)
    if op == "channel_conv":  # nn.Conv1d across the channels: the Cx1x1 vector as (N, 1, C), as timm's ECA
        return Step(label, [f"{out} = {{m}}({arg}.view({arg}.shape[0], 1, -1)).view_as({arg})"], name, source)
    return Step(label, [f"{out} = {{m}}({arg})"], name, source, (out, arg))


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
        self.containers: dict[str, list[str]] = {}  # container path -> its direct children's keys
        for label, _, _ in entries:
            parts = label.split(".") if label else []
            for i in range(1, len(parts)):
                keys = self.containers.setdefault(".".join(parts[:i]), [])
                if parts[i] not in keys:
                    keys.append(parts[i])
        stages = {label for label, ctor, _ in entries if ctor == STAGE}
        at: dict[str, list[int]] = {}  # container -> where its layers' steps are
        for i, step in enumerate(steps):
            if step.label:
                at.setdefault(step.label.rpartition(".")[0], []).append(i)
        self.sequential = {
            c for c, keys in self.containers.items()
            if _runs_in_sequence(graph, c, self.containers, steps, at.get(c, []))
            and not any(f"{c}.{key}" in stages for key in keys)}

    def reach(self, path: str) -> str:
        """The expression that reaches a layer from `self`: `self.se.fc1`, `self.head["0"]`."""
        parts, text = path.split("."), "self"
        for i, part in enumerate(parts):
            parent = ".".join(parts[:i])
            keyed = parent in self.containers and _keyed(self.containers[parent])
            text += f'["{part}"]' if keyed else f".{part}"
        return text

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
                    init += sequential_of(self.reach(path), [ctors[f"{path}.{key}"] for key in keys])
                    made.update(f"{path}.{key}" for key in keys)
                    break
                container = "nn.ModuleDict()" if _keyed(self.containers[path]) else "nn.Module()"
                init.append(f"{self.reach(path)} = {container}")
            if label not in made:
                made.add(label)
                init += self._construct(label, *ctors[label])
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
            parent = step.label.rpartition(".")[0] if step.label else ""
            if parent in self.sequential:
                n = len(self.containers[parent])
                forward.append(f"{steps[i + n - 1].call[0]} = {self.reach(parent)}({step.call[1]})")
                i += n
                continue
            reach = self.reach(step.label) if step.label else ""
            forward += [line.replace("{m}", reach) if step.label else line for line in step.lines]
            i += 1
        return forward


STAGE = "<stage>"  # an entry's constructor: the stage's blocks, as one nn.Sequential


def _keyed(keys: list[str]) -> bool:
    """Whether a container's children need keys (`["0"]`) rather than attribute names."""
    return any(not k.isidentifier() for k in keys)


def _runs_in_sequence(
    graph: Graph, container: str, containers: dict[str, list[str]], steps: list[Step], at: list[int]
) -> bool:
    """Its children are layers keyed 0..n-1 that run in that order, each reading only the one before
    and read only by the next, all plain calls: an nn.Sequential computes exactly that. `at`: where
    its children's steps are."""
    keys = containers[container]
    if keys != [str(i) for i in range(len(keys))] or any(f"{container}.{k}" in containers for k in keys):
        return False
    if len(at) != len(keys) or at != list(range(at[0], at[0] + len(keys))):
        return False
    run = [steps[i] for i in at]
    if [s.label for s in run] != [f"{container}.{k}" for k in keys] or any(s.call is None for s in run):
        return False
    return all(b.source == a.name and graph.users(a.name) == [b.name] for a, b in pairwise(run))
