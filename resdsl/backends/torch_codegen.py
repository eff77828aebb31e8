"""Graph -> readable, standalone PyTorch source (Jinja2), without importing torch.

Each distinct block instance becomes one nn.Module class (identical instances share it), each
stage an nn.Sequential of them, so the module tree and state_dict names follow the graph's
node names exactly: `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`.
Each op has a converter giving its constructor and its forward statement.
"""
from __future__ import annotations

import builtins
import keyword
import linecache
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
    in_shape: str = ""
    out_shape: str = ""


class _Namespace:
    """Hands out class names that are unique and shadow nothing the generated module uses."""

    def __init__(self) -> None:
        self.used = set(keyword.kwlist) | set(dir(builtins)) | {"torch", "nn", "F", "Tensor", "build",
                                                                "annotations"}

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
    classes: dict[str, _Class] = {}  # class body text -> class, so identical blocks share one
    stage_classes: dict[str, list[str]] = {}
    for stage in graph.stages.values():
        stage_classes[stage.name] = []
        for path in stage.blocks:
            cls = _block_class(graph, path)
            key = "\n".join(cls.init + ["--"] + cls.forward + [cls.block, cls.in_shape])
            if key not in classes:
                cls.name = names.fresh(camel(cls.block) + "Block")
                classes[key] = cls
            classes[key].paths.append(path)
            stage_classes[stage.name].append(classes[key].name)
    main = _main_class(graph, names.fresh(camel(graph.name)), stage_classes)
    for cls in classes.values():
        cls.paths = _abbreviate(cls.paths)
    params, macs = totals(graph)
    return _template().render(
        network=graph.name, source=source_name or f"network `{graph.name}`",
        input=fmt_shape(graph.shape(INPUT)), classes=graph.classes,
        params=f"{params:,}", macs=f"{macs:,}", blocks=list(classes.values()), main=main)


def _block_class(graph: Graph, path: str) -> _Class:
    block = graph.blocks[path]
    cls = _Class("", block.block, in_shape=fmt_shape(graph.shape(block.input)),
                 out_shape=fmt_shape(graph.shape(block.output)))
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


def _main_class(graph: Graph, name: str, stage_classes: dict[str, list[str]]) -> _Class:
    cls = _Class(name)
    for kind, item in graph.layout:
        if kind == "stage":
            cls.init.append(f"self.{item} = nn.Sequential({_sequence(stage_classes[item])})")
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


def _sequence(class_names: list[str]) -> str:
    """`A(), *[B() for _ in range(5)]`: runs of one class written once."""
    parts, i = [], 0
    while i < len(class_names):
        j = i
        while j < len(class_names) and class_names[j] == class_names[i]:
            j += 1
        run = j - i
        parts.append(f"{class_names[i]}()" if run == 1 else f"*[{class_names[i]}() for _ in range({run})]")
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
