"""Graph -> readable, standalone PyTorch source (Jinja2), without importing torch.

Blocks of one structure share an nn.Module class whose constructor takes the block's own
parameters (`BottleneckBlock(256, 64)`), each stage is an nn.Sequential of them, so the module
tree and state_dict names follow the graph's node names exactly: `layer1.0.conv1`,
`layer1.0.downsample.0`, `fc`. Each op has a converter giving its constructor.
"""
from __future__ import annotations

import builtins
import keyword
import linecache
import re
import sys
import types
from dataclasses import dataclass, field
from functools import lru_cache
from math import prod
from pathlib import Path
from typing import Callable

import jinja2

from ..ir import INPUT, Graph
from ..ops import fmt_shape
from ..resources import templates_dir
from ..stats import totals


# ---- converters: op -> constructor (None for ops without a module) -------------------------
def _conv(a: dict, shape: tuple[int, ...]) -> str:
    args = [str(shape[0]), str(a["out"]), f"kernel_size={a['kernel']}"]
    args += [f"stride={a['stride']}"] if a["stride"] != 1 else []
    args += [f"padding={a['padding']}"] if a["padding"] else []
    args += [f"groups={a['groups']}"] if a["groups"] != 1 else []
    args += ["bias=False"] if not a["bias"] else []
    return f"nn.Conv2d({', '.join(args)})"


def _pool(a: dict, shape: tuple[int, ...]) -> str:
    return f"nn.MaxPool2d(kernel_size={a['kernel']}, stride={a['stride']}, padding={a['padding']})"


# Each takes the node's attributes and its input's shape.
CONSTRUCTORS: dict[str, Callable[[dict, tuple[int, ...]], str | None]] = {
    "conv": _conv,
    "bn": lambda a, shape: f"nn.BatchNorm2d({shape[0]})",
    "relu": lambda a, shape: "nn.ReLU(inplace=True)",  # made out-of-place below where unsafe
    "maxpool": _pool,
    "avgpool": lambda a, shape: "nn.AdaptiveAvgPool2d((1, 1))",
    "fc": lambda a, shape: f"nn.Linear({prod(shape)}, {a['out']})",  # after torch.flatten
    "add": lambda a, shape: None,
    "pad": lambda a, shape: None,
}


@dataclass
class _Class:
    name: str
    block: str = ""
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    shapes: str = ""  # "64x56x56 -> 256x56x56", where all its blocks have the same
    params: list[str] = field(default_factory=list)  # constructor parameters


# Names generated code uses or Python reserves: no class or parameter may take them.
_RESERVED = set(keyword.kwlist) | set(dir(builtins)) | {"self", "x", "torch", "nn", "F", "Tensor"}


class _Namespace:
    """Hands out class names that are unique and shadow nothing the generated module uses."""

    def __init__(self) -> None:
        self.used = _RESERVED | {"build", "annotations"}

    def fresh(self, base: str) -> str:
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}{n}"
        self.used.add(name)
        return name


def camel(name: str) -> str:
    parts = [p for p in name.split("_") if p]
    out = ""
    for part in parts:
        out += ("_" if out and part[0].isdigit() else "") + part[0].upper() + part[1:]
    return out or "Net"


def generate(graph: Graph, source_name: str | None = None) -> str:
    names = _Namespace()
    structures: dict[tuple, list[tuple[str, _Class]]] = {}  # blocks that differ only in integers
    for stage in graph.stages.values():
        for path in stage.blocks:
            cls = _block_class(graph, path)
            # forward() stays literal (it cannot read constructor arguments without storing them).
            key = (cls.block, tuple(_INT.sub("#", line) for line in cls.init), tuple(cls.forward))
            structures.setdefault(key, []).append((path, cls))
    classes: list[_Class] = []
    calls: dict[str, str] = {}  # block path -> constructor call
    for members in structures.values():
        for cls, args in _share_classes(graph, members):
            cls.name = names.fresh(camel(cls.block) + "Block")
            classes.append(cls)
            for path, values in args.items():
                calls[path] = f"{cls.name}({', '.join(map(str, values))})"
    stage_calls = {stage.name: [calls[p] for p in stage.blocks] for stage in graph.stages.values()}
    main = _main_class(graph, names.fresh(camel(graph.name)), stage_calls)
    params, macs = totals(graph)
    return _template().render(
        network=graph.name, source=source_name or f"network `{graph.name}`",
        input=fmt_shape(graph.shape(INPUT)), classes=graph.classes,
        params=f"{params:,}", macs=f"{macs:,}", blocks=classes, main=main)


_INT = re.compile(r"(?<![\w.])\d+(?![\w.])")  # an integer literal, not part of a name or float


def _share_classes(graph: Graph, members: list[tuple[str, _Class]]) -> list[tuple[_Class, dict[str, list[int]]]]:
    """One class for blocks of one structure, the integers that differ between them written as
    the block's parameters (`width`, `width * 4`, `in_channels`); where some integer is not
    explained by them, one class per distinct body instead. Returns (class, path -> args)."""
    if len({tuple(cls.init) for _, cls in members}) > 1:  # forward() is equal: it is in the key
        shared = _parametrize(graph, members)
        if shared is not None:
            return [shared]
    by_body: dict[tuple[str, ...], tuple[_Class, list[str]]] = {}
    for path, cls in members:
        by_body.setdefault(tuple(cls.init), (cls, []))[1].append(path)
    out = []
    for cls, paths in by_body.values():
        cls.shapes, cls.paths = _shapes(graph, paths), _abbreviate(paths)
        out.append((cls, {path: [] for path in paths}))
    return out


def _parametrize(graph: Graph, members: list[tuple[str, _Class]]):
    envs = []
    for path, _ in members:
        block = graph.blocks[path]
        env: dict[str, int] = {}
        for name, value in block.args.items():  # `self` -> `self_`, unless a `self_` came first
            env[_fresh_param(_py_name(name), env)] = value
        env[_fresh_param("in_channels", env)] = graph.shape(block.input)[0]
        envs.append(env)
    variables = list(envs[0])  # the block's parameters first: `width` reads better than `in_channels`
    columns = list(zip(*[[int(v) for line in cls.init for v in _INT.findall(line)] for _, cls in members]))
    exprs: list[str | None] = []
    for column in columns:
        if len(set(column)) == 1:
            exprs.append(None)  # the same everywhere: stays a literal
            continue
        expr = _explain(list(column), variables, envs)
        if expr is None:
            return None
        exprs.append(expr)
    in_channels = variables[-1]
    used = [v for v in [in_channels, *variables[:-1]]  # in_channels first, as torchvision's inplanes
            if any(e is not None and re.match(rf"{v}\b", e) for e in exprs)]
    slots = iter(exprs)

    def substitute(match: re.Match) -> str:
        expr = next(slots)
        return match.group(0) if expr is None else expr

    first = members[0][1]
    cls = _Class("", first.block, init=[_INT.sub(substitute, line) for line in first.init], forward=first.forward,
                 params=used)
    paths = [path for path, _ in members]
    cls.shapes = _shapes(graph, paths)
    cls.paths = _abbreviate(paths)
    return cls, {path: [env[v] for v in used] for path, env in zip(paths, envs)}


def _explain(column: list[int], variables: list[str], envs: list[dict[str, int]]) -> str | None:
    """An expression of one variable, `v`, `v * k` or `v // k`, equal to `column` in every block."""
    for v in variables:  # a variable itself before any multiple of another
        if [env[v] for env in envs] == column:
            return v
    for v in variables:
        values = [env[v] for env in envs]
        if all(values) and all(c % x == 0 for c, x in zip(column, values)):
            ratios = {c // x for c, x in zip(column, values)}
            if len(ratios) == 1:
                return f"{v} * {ratios.pop()}"
        if all(column) and all(x % c == 0 for c, x in zip(column, values)):
            ratios = {x // c for c, x in zip(column, values)}
            if len(ratios) == 1:
                return f"{v} // {ratios.pop()}"
    return None


def _py_name(name: str) -> str:
    """A spec's parameter name as a Python parameter: never a keyword or a name the class uses."""
    return name + "_" if name in _RESERVED else name


def _fresh_param(base: str, taken: dict[str, int]) -> str:
    while base in taken:
        base += "_"
    return base


def _shapes(graph: Graph, paths: list[str]) -> str:
    shapes = {(fmt_shape(graph.shape(graph.blocks[p].input)), fmt_shape(graph.shape(graph.blocks[p].output)))
              for p in paths}
    return " -> ".join(shapes.pop()) if len(shapes) == 1 else ""


def _block_class(graph: Graph, path: str) -> _Class:
    block = graph.blocks[path]
    cls = _Class("", block.block)
    nodes = graph.scope_nodes(path)
    var = {block.input: "x"}
    emitted_downsample = False
    for name in nodes:
        node = graph.node(name)
        label, op, a = node["label"], node["op"], node["attrs"]
        ins = graph.inputs(name)
        src = [var[i] for i in ins]
        in_shape = graph.shape(ins[0])
        if label.startswith("downsample."):
            # torchvision keeps the projection as one nn.Sequential named `downsample`.
            var[name] = "identity"
            if not emitted_downsample:
                conv = graph.node(f"{path}.downsample.0")["attrs"]
                cls.init.append(f"self.downsample = nn.Sequential({_conv(conv, in_shape)}, "
                                f"nn.BatchNorm2d({conv['out']}))")
                cls.forward.append(f"identity = self.downsample({src[0]})")
                emitted_downsample = True
            continue
        if op == "pad":
            var[name] = "identity"
            sub = src[0] if a["stride"] == 1 else f"{src[0]}[:, :, ::{a['stride']}, ::{a['stride']}]"
            cls.forward.append(f"identity = F.pad({sub}, (0, 0, 0, 0, {a['pad_before']}, {a['pad_after']}))")
            continue
        if op == "add":
            var[name] = "out"
            cls.forward += _add(graph, name, src)
            continue
        var[name] = "gate" if label == "gate" else "out"
        cls.init.append(f"self.{label} = {_constructor(graph, name, in_shape)}")
        cls.forward.append(f"{var[name]} = self.{label}({src[0]})")
    cls.forward.append(f"return {var[block.output]}")
    return cls


def _add(graph: Graph, name: str, src: list[str]) -> list[str]:
    residual, shortcut = src[0], src[1]
    if graph.node(name)["attrs"]["gated"]:
        return ["t = torch.sigmoid(gate)", f"out = {residual} * t + {shortcut} * (1.0 - t)"]
    if residual == "out" and len(graph.users(graph.inputs(name)[0])) == 1:
        return [f"out += {shortcut}"]  # in place, as torchvision does: the branch's value is dead
    return [f"out = {residual} + {shortcut}"]


def _constructor(graph: Graph, name: str, in_shape: tuple[int, ...]) -> str:
    node = graph.node(name)
    ctor = CONSTRUCTORS[node["op"]](node["attrs"], in_shape)
    if node["op"] == "relu":
        source = graph.inputs(name)[0]
        # In place only when nothing else reads the input (e.g. not a block input feeding a shortcut).
        if len(graph.users(source)) != 1 or source == INPUT:
            ctor = "nn.ReLU()"
    return ctor


def _main_class(graph: Graph, name: str, stage_calls: dict[str, list[str]]) -> _Class:
    cls = _Class(name)
    for kind, item in graph.layout:
        if kind == "stage":
            cls.init.append(f"self.{item} = nn.Sequential({_sequence(stage_calls[item])})")
            cls.forward.append(f"x = self.{item}(x)")
            continue
        node = graph.node(item)
        if node["op"] == "fc":
            cls.forward.append("x = torch.flatten(x, 1)")
        in_shape = graph.shape(graph.inputs(item)[0])
        cls.init.append(f"self.{node['label']} = {_constructor(graph, item, in_shape)}")
        cls.forward.append(f"x = self.{node['label']}(x)")
    cls.forward.append("return x")
    return cls


def _sequence(calls: list[str]) -> str:
    """`A(64), *[B(256, 64) for _ in range(5)]`: runs of one call written once."""
    parts, i = [], 0
    while i < len(calls):
        j = i
        while j < len(calls) and calls[j] == calls[i]:
            j += 1
        run = j - i
        parts.append(calls[i] if run == 1 else f"*[{calls[i]} for _ in range({run})]")
        i = j
    return ", ".join(parts)


def _abbreviate(paths: list[str]) -> str:
    return ", ".join(paths) if len(paths) <= 4 else f"{paths[0]}, {paths[1]}, ... {paths[-1]} ({len(paths)} blocks)"


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, autoescape=False)
    return env.get_template("torch_module.py.j2")


def instantiate(graph: Graph, seed: int | None = None):
    """Build the generated module in memory, as if imported from a file."""
    module = load_source(generate(graph), graph.name)
    return module.build(seed)


def load_source(source: str, name: str) -> types.ModuleType:
    # Register the text with linecache so inspect (and so torch.jit.script) can read it back.
    import hashlib
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    filename = f"<resdsl:{name}:{digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"resdsl_generated_{digest}")
    module.__file__ = filename
    sys.modules[module.__name__] = module
    exec(compile(source, filename, "exec"), module.__dict__)
    return module
