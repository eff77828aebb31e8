"""Graph -> readable, standalone PyTorch source (Jinja2), without importing torch.

One nn.Module class per block definition, as torchvision and timm write theirs: the constructor
takes the block's own parameters (`Bottleneck(in_channels, width, stride=1, groups=1, ...,
downsample=None)`) and every layer is written with the expressions the spec used
(`nn.Conv2d(width, width * expansion, ...)`), so every block of a definition is one class. A
shortcut that a policy inserted is built by the network and handed in as `downsample`, as
torchvision's `_make_layer` does; a highway gate, present in every gated block, is the block's
own. A parameter holding a layer kind (`act = relu`) becomes a constructor argument as timm's
`act_layer=nn.ReLU` where some block gives it another kind (see `kind_arguments`). Each stage is
an nn.Sequential of blocks, so module and state_dict names are the graph's
node names: `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`.

Every expression is checked against the integers of every block it stands for; a definition
whose layers the spec's expressions cannot explain (none among the bundled specs) gets one
class per distinct body instead, with literal integers.
"""
from __future__ import annotations

import hashlib
import linecache
import sys
import types
from dataclasses import dataclass, field
from functools import lru_cache
from math import prod
from typing import Callable

import jinja2

from .. import ast
from ..diagnostics import ResdslError
from ..ir import GATE, INPUT, PAD, PROJECTION, Graph
from ..kinds import NONE, Kind, kind_of
from ..lower import POSITION, evaluate
from ..ops import OPS, fmt_shape
from ..reserved import HELPERS, LOCALS, PYTHON
from ..resources import templates_dir
from ..stats import totals
from .support import check_supported

LINE_LIMIT = 110  # the project's own (pyproject.toml)
IN = "<in>"  # the block input's channel count: not an identifier, so no spec parameter is named so


@dataclass(frozen=True)
class Sym:
    """An integer in generated code: its Python text, its binding strength (4 atom, 3 unary
    minus, 2 `*`/`//`, 1 `+`/`-`) and, unless a literal, the spec expression it came from."""
    text: str
    prec: int = 4
    expr: ast.Expr | None = None

    @classmethod
    def literal(cls, value: int | float) -> "Sym":
        return cls(repr(value), 4 if value >= 0 else 3)

    def value(self, env: dict[str, int | float]) -> int | float:
        if self.expr is None:
            return float(self.text) if any(c in self.text for c in ".en") else int(self.text)
        return evaluate(self.expr, env)


class Inexpressible(Exception):
    """A spec expression the generated class cannot write: it reads a name the class does not
    take (the block's place in the network). The definition gets literal classes instead."""


def render(expr: ast.Expr, names: dict[str, str], env: dict[str, int | float] | None = None) -> Sym:
    """A spec expression as Python. `/` between integers (checked exact when lowered) becomes
    `//`; between reals (a float literal, or a parameter `env` binds to a float) stays `/`."""
    if isinstance(expr, ast.Int):
        return Sym(str(expr.value), 4, expr)
    if isinstance(expr, ast.Float):
        return Sym(repr(expr.value), 4, expr)
    if isinstance(expr, ast.Var):
        if expr.name not in names:
            raise Inexpressible(f"`{expr.name}` is no parameter of the class")
        return Sym(names[expr.name], 4, expr)
    if isinstance(expr, ast.Neg):
        inner = render(expr.operand, names, env)
        return Sym("-" + _wrap(inner, 3), 3, expr)
    prec = 1 if expr.op in "+-" else 2
    lhs, rhs = render(expr.lhs, names, env), render(expr.rhs, names, env)
    op = "//" if expr.op == "/" and not (_real(expr.lhs, env) or _real(expr.rhs, env)) else expr.op
    return Sym(f"{_wrap(lhs, prec)} {op} {_wrap(rhs, prec + 1)}", prec, expr)


def block_env(graph: Graph, path: str) -> dict[str, int | float]:
    """What a block's expressions may name, with its values: its parameters, its lets, the
    input channels and `classes`."""
    block = graph.blocks[path]
    env = {**block.args, IN: graph.shape(block.input)[0], "classes": graph.classes}
    for name, expr in graph.signatures[block.block].lets:
        env[name] = evaluate(expr, env)
    return env


def _real(expr: ast.Expr, env: dict[str, int | float] | None) -> bool:
    if env is not None:
        try:
            return isinstance(evaluate(expr, env), float)
        except ResdslError:  # a name env lacks: judge by the literals below
            pass
    if isinstance(expr, ast.Float):
        return True
    if isinstance(expr, ast.Neg):
        return _real(expr.operand, env)
    if isinstance(expr, ast.BinOp):
        return _real(expr.lhs, env) or _real(expr.rhs, env)
    return False


def _wrap(sym: Sym, prec: int) -> str:
    return sym.text if sym.prec >= prec else f"({sym.text})"


# Names generated code uses or Python reserves: no class, parameter or variable may take them.
_RESERVED = PYTHON | LOCALS | HELPERS | {"downsample"}


class _Namespace:
    """Hands out names that are unique and shadow nothing the generated module uses."""

    def __init__(self, taken=()) -> None:
        self.used = set(_RESERVED) | set(taken)

    def fresh(self, base: str, sep: str = "") -> str:
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}{sep}{n}"
        self.used.add(name)
        return name


def camel(name: str) -> str:
    parts = [p for p in name.split("_") if p]
    out = ""
    for part in parts:
        out += ("_" if out and part[0].isdigit() else "") + part[0].upper() + part[1:]
    return out or "Net"


def class_name(definition: str) -> str:
    """`bottleneck` -> Bottleneck and `basic` -> BasicBlock, as torchvision names them."""
    name = camel(definition)
    return name if "Bottleneck" in name or name.endswith("Block") else name + "Block"


def call(head: str, args: list[str], indent: int, one_per_line: bool = False) -> list[str]:
    """`head(a, b)` on one line where it fits at `indent`, else the arguments on continuation
    lines (packed, or one a line), black's way. Lines are relative to `indent`."""
    one = f"{head}({', '.join(args)})"
    if indent + len(one) <= LINE_LIMIT:
        return [one]
    lines, current = [f"{head}("], ""
    for arg in args:
        piece = arg + ","
        if current and (one_per_line or indent + 4 + len(current) + 1 + len(piece) > LINE_LIMIT):
            lines.append("    " + current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    return lines + ["    " + current, ")"]


# ---- converters: op -> constructor arguments, in terms of `Sym`s --------------------------
@dataclass
class _Layer:
    """What a converter sees: the node's attributes as `Sym`s, its input's channels."""
    sym: Callable[[str], Sym]  # attribute -> Sym (the spec's expression, or a literal)
    channels: Sym  # the input's channel count
    in_shape: tuple[int, ...]


def _conv(layer: _Layer, a: dict) -> tuple[str, list[str]]:
    args = [layer.channels.text, layer.sym("out").text, f"kernel_size={layer.sym('kernel').text}"]
    for key, default in (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)):
        sym = layer.sym(key)
        # Written where it differs from PyTorch's default, or where the spec wrote a parameter (`s=stride`).
        if a[key] != default or sym.expr is not None and not isinstance(sym.expr, ast.Int):
            args.append(f"{key}={sym.text}")
    return "nn.Conv2d", args + (["bias=False"] if not a["bias"] else [])


def _bn(layer: _Layer, a: dict) -> tuple[str, list[str]]:
    eps = layer.sym("eps")
    # Written where it is not PyTorch's default, or where the spec wrote a parameter (`eps=eps`).
    if a["eps"] != OPS["bn"].defaults["eps"] or eps.expr is not None and not isinstance(
            eps.expr, (ast.Int, ast.Float)):
        return "nn.BatchNorm2d", [layer.channels.text, f"eps={eps.text}"]
    return "nn.BatchNorm2d", [layer.channels.text]


def _window_args(layer: _Layer, a: dict) -> list[str]:
    return [f"kernel_size={layer.sym('kernel').text}", f"stride={layer.sym('stride').text}",
            f"padding={layer.sym('padding').text}"] + (["ceil_mode=True"] if a["ceil"] else [])


def _avgpool(layer: _Layer, a: dict) -> tuple[str, list[str]]:
    if not a["kernel"]:
        size = layer.sym("size").text
        return "nn.AdaptiveAvgPool2d", [f"({size}, {size})"]
    return "nn.AvgPool2d", _window_args(layer, a) + ([] if a["count_pad"] else ["count_include_pad=False"])


def _fc(layer: _Layer, a: dict) -> tuple[str, list[str]]:
    spatial = prod(layer.in_shape[1:])
    features = layer.channels.text if spatial == 1 else str(prod(layer.in_shape))  # after torch.flatten
    return "nn.Linear", [features, layer.sym("out").text]


@dataclass(frozen=True)
class Module:
    """A layer the generated class holds as a module: `build` gives its (constructor, arguments);
    `written` names the attributes those arguments write, each checked against every block a
    class stands for. An `inplace` one (`relu`, as torchvision writes it) gets `inplace=True`
    unless its input is read again (a block input feeding the shortcut): see `_module_call`."""
    build: Callable[[_Layer, dict], tuple[str, list[str]]]
    written: tuple[str, ...] = ()
    inplace: bool = False


@dataclass(frozen=True)
class Join:
    """A join of named values, one expression of its operands' variables in `forward`. (The
    residual `add shortcut` is the block's own statement: see `_BlockEmitter._add`.)"""
    write: Callable[[list[str]], str]


@dataclass(frozen=True)
class Handed:
    """Made only by shortcut legalization: the network builds its module (ZeroPadShortcut,
    projection(), a policy's helper) and hands it to the block as `downsample`."""


Converter = Module | Join | Handed
CONVERTERS: dict[str, Converter] = {
    "conv": Module(_conv, ("out", "kernel", "stride", "padding", "dilation", "groups")),
    "bn": Module(_bn, ("eps",)),
    "relu": Module(lambda layer, a: ("nn.ReLU", []), inplace=True),
    "leaky_relu": Module(lambda layer, a: ("nn.LeakyReLU", [layer.sym("slope").text]), ("slope",)),
    "sigmoid": Module(lambda layer, a: ("nn.Sigmoid", [])),
    "relu6": Module(lambda layer, a: ("nn.ReLU6", []), inplace=True),
    "silu": Module(lambda layer, a: ("nn.SiLU", []), inplace=True),
    "gelu": Module(lambda layer, a: ("nn.GELU", [])),  # approximate="none": the erf form
    "hardsigmoid": Module(lambda layer, a: ("nn.Hardsigmoid", []), inplace=True),
    "hardswish": Module(lambda layer, a: ("nn.Hardswish", []), inplace=True),
    "softmax": Module(lambda layer, a: ("nn.Softmax", ["dim=1"])),
    "maxpool": Module(lambda layer, a: ("nn.MaxPool2d", _window_args(layer, a)),
                      ("kernel", "stride", "padding")),
    "avgpool": Module(_avgpool, ("kernel", "stride", "padding", "size")),
    "lrn": Module(lambda layer, a: ("nn.LocalResponseNorm", [layer.sym("size").text] + [
        f"{key}={layer.sym(key).text}" for key in ("alpha", "beta", "k")]), ("size", "alpha", "beta", "k")),
    "dropout": Module(lambda layer, a: ("nn.Dropout", [layer.sym("p").text]), ("p",)),
    "flatten": Module(lambda layer, a: ("nn.Flatten", [])),
    "drop_path": Module(lambda layer, a: ("DropPath", [layer.sym("rate").text]), ("rate",)),
    "fc": Module(_fc, ("out",)),
    "add": Join(" + ".join),
    "sub": Join(" - ".join),
    "mul": Join(" * ".join),
    "concat": Join(lambda operands: f"torch.cat([{', '.join(operands)}], 1)"),
    "pad": Handed(),
}


def _module(op: str) -> Module:
    converter = CONVERTERS[op]  # every op is in the table: `generate` checked before emitting
    assert isinstance(converter, Module), f"{op} is not a module"
    return converter


def _module_call(graph: Graph, op: str, layer: _Layer, a: dict, source: str,
                 inplace: bool | None = None) -> tuple[str, list[str]]:
    """A layer's (constructor, arguments); an in-place one is in place only where its input may
    be overwritten (see `_overwritable`). `inplace`, where given, says whether the module can be
    (every kind a parameter takes can)."""
    module = _module(op)
    ctor, args = module.build(layer, a)
    if inplace is None:
        inplace = module.inplace
    if inplace and _overwritable(graph, source):
        args = [*args, "inplace=True"]
    return ctor, args


def _overwritable(graph: Graph, value: str) -> bool:
    """Whether a layer reading `value` may overwrite it: nothing else reads it (the block input
    that feeds the shortcut), the caller did not pass it (the network's input), and forward does
    not return it (a named output: `outputs["stem_bn"] = x` holds the tensor, not a copy)."""
    return len(graph.users(value)) == 1 and value != INPUT and all(node != value for _, node in graph.outputs)


def constructor(op: str) -> str:
    """The module class a layer kind's layers are made with (`silu` -> `nn.SiLU`)."""
    attrs = {key: 1 if value is None else value for key, value in OPS[op].defaults.items()}
    return _module(op).build(_Layer(lambda key: Sym.literal(attrs[key]), Sym("c"), (1, 1, 1)), attrs)[0]


def kind_arguments(graph: Graph, paths: list[str]) -> tuple[set[str], dict[str, bool]]:
    """A block definition's kind parameters (`act`), and those its class takes as constructor
    arguments, as timm's `act_layer=nn.ReLU`, each with whether every kind it takes works in
    place. A class takes one where some block gives it a kind other than its default, and no
    block `none` (its layer left out there, the blocks have different bodies); elsewhere the class
    writes its one kind as any layer, so a spec that changes no kind gets the class it always did."""
    blocks = [graph.blocks[p] for p in paths]
    defaults = dict(graph.signatures[blocks[0].block].params)
    kinds = {name for b in blocks for name, value in b.args.items() if isinstance(value, Kind)}
    taken: dict[str, bool] = {}
    for name in sorted(kinds):
        given = {b.args[name] for b in blocks}
        default = {evaluate(defaults[name], {**b.args, "classes": graph.classes}) for b in blocks}
        if given != default and all(k.op != NONE for k in given | default):
            taken[name] = all(_module(k.op).inplace for k in given | default)
    return kinds, taken


def _inserted(graph: Graph, path: str, role: str) -> list[str]:
    """The nodes shortcut legalization inserted into block `path` with `role`, in order."""
    return [n for n in graph.scope_nodes(path) if graph.node(n)["role"] == role]


@dataclass
class _Class:
    name: str
    doc: str
    signature: list[str] = field(default_factory=list)  # physical lines, relative to the class body
    init: list[str] = field(default_factory=list)  # physical lines, relative to the method body
    forward: list[str] = field(default_factory=list)
    returns: str = "Tensor"


@dataclass
class _Emitted:
    """One block's class body as emitted, and the checks that make it stand for other blocks."""
    init: list[str]
    forward: list[str]
    checks: list[tuple[Sym, Callable[[str], int]]]  # (sym, block path -> the integer it must be there)
    shortcut: bool  # some shortcut module is handed in
    structure: tuple


class _BlockEmitter:
    """Emits a block definition's class body from one of its blocks (the prototype)."""

    def __init__(self, graph: Graph, params: dict[str, str], literal: bool,
                 kinds: dict[str, bool] | None = None) -> None:
        self.graph, self.params, self.literal = graph, params, literal
        self.kinds = {} if literal or kinds is None else kinds  # see `kind_arguments`

    def emit(self, path: str, shortcut: bool) -> _Emitted:
        g = self.graph
        block = g.blocks[path]
        self.env = block_env(g, path)
        self.proto = path
        channels = {block.input: self._channels(path)}
        entries, steps, checks, structure = [], [], [], []
        var = {block.input: "x"}
        nodes = g.scope_nodes(path)
        # Gathered once: asking every node whether some add reads it was quadratic in the block's size.
        self.add_sources = {g.node(a)["attrs"].get("source") for a in nodes if g.node(a)["op"] == "add"}
        self.variables: dict[str, str] = {}  # label (of a kept value or a branch) -> its variable
        self.locals = _Namespace()
        for name in nodes:
            node = g.node(name)
            label, op, a = node["label"], node["op"], node["attrs"]
            if node["role"] is not None:  # inserted by shortcut legalization: handed in, or the gate
                continue
            source = g.inputs(name)[0]
            target = self._target(name, path)
            if op == "add" and a["policy"] != "join":
                lines = self._add(name, var[source], shortcut, var.get(a.get("source"), "x"), target)
            elif isinstance(CONVERTERS[op], Join):
                lines = [f"{target} = " + CONVERTERS[op].write([var[i] for i in g.inputs(name)])]
            else:
                lines = None
            if lines is not None:
                steps.append(_Step(None, lines, name, source))
                var[name] = target
                channels[name] = channels[source] if op != "concat" else Sym.literal(g.shape(name)[0])
                structure.append((label, op, tuple(lines)))
                continue
            layer = _Layer(self._attr_sym(node), channels[source], g.shape(source))
            kind = node["exprs"].get("op")  # the parameter its kind came from, if a class argument
            kind = kind.name if kind is not None and kind.name in self.kinds else None
            ctor, args = _module_call(g, op, layer, a, source, self.kinds[kind] if kind else None)
            if kind:
                ctor = self.params[kind]
            entries.append((label, ctor, args))
            steps.append(_layer_step(label, op, name, source, var[source], target, layer.in_shape))
            var[name] = target
            channels[name] = layer.sym("out") if op in ("conv", "fc") else channels[source]
            checks += self._checks(label, op, layer, source)
            structure.append((label, f"<{kind}>" if kind else op, tuple(args), target))
        init, forward = _assemble(g, entries, steps)
        gate = self._gate(path, channels, checks)
        if gate:
            init += gate
        forward.append(f"return {var[block.output]}")
        return _Emitted(init, forward, checks, shortcut, tuple(structure))

    def _target(self, name: str, path: str) -> str:
        """The variable a node's value goes to: `out` along the block's chain; a branch's own name
        (`se`) along a branch; its label where it is read again later (SE's input, the
        pre-activation a projection reads)."""
        g = self.graph
        node = g.node(name)
        readers = [u for u in g.users(name) if g.node(u)["scope"] == path]
        kept = len(readers) > 1 or name in self.add_sources
        if kept:
            return self._variable(node["label"])
        if node["branch"]:
            return self._variable(node["branch"])
        return "out"

    def _variable(self, label: str) -> str:
        """One variable per label, never another label's: `out` and `out_` would both be `out_`."""
        if label not in self.variables:
            self.variables[label] = self.locals.fresh(_variable(label))
        return self.variables[label]

    def _channels(self, path: str) -> Sym:
        block = self.graph.blocks[path]
        if self.literal:
            return Sym.literal(self.graph.shape(block.input)[0])
        return Sym(self.params[IN], 4, ast.Var(IN, None))

    def _attr_sym(self, node: dict) -> Callable[[str], Sym]:
        def sym(key: str) -> Sym:
            expr = node["exprs"].get(key)
            if expr is None or self.literal:
                return Sym.literal(node["attrs"][key])
            return render(expr, self.params, self.env)
        return sym

    def _checks(self, label: str, op: str, layer: _Layer, source: str) -> list:
        g = self.graph
        out = [(layer.channels, lambda p, s=source, proto=self.proto: g.shape(_peer(g, s, p, proto))[0])]
        for key in _module(op).written:
            out.append((layer.sym(key), lambda p, k=key: g.node(f"{p}.{label}")["attrs"].get(k)))
        return out

    def _add(self, name: str, residual: str, shortcut: bool, source: str, target: str) -> list[str]:
        """`add shortcut`: the block input, or what the handed-in `downsample` makes of `source`."""
        g = self.graph
        lines, identity = [], "x"
        if shortcut:
            lines, identity = ["identity = x", "if self.downsample is not None:",
                               f"    identity = self.downsample({source})"], "identity"
        if g.node(name)["attrs"]["gated"]:
            return lines + ["t = torch.sigmoid(self.gate(x))",
                            f"{target} = {residual} * t + {identity} * (1.0 - t)"]
        if residual == "out" == target and len(g.users(g.inputs(name)[0])) == 1:
            return lines + [f"out += {identity}"]  # in place, as torchvision does: the branch's value is dead
        return lines + [f"{target} = {residual} + {identity}"]

    def _gate(self, path: str, channels: dict, checks: list) -> list[str]:
        """The highway gate, a 1x1 conv of the block input with a bias, its stride the shortcut's."""
        g = self.graph
        gates = _inserted(g, path, GATE)
        if not gates:
            return []
        gate = gates[0]
        add = next(u for u in g.users(gate) if g.node(u)["op"] == "add")
        residual = channels[g.inputs(add)[0]]
        stride = self._stride_sym(g.node(gate)["attrs"]["stride"])
        checks += [(residual, lambda p: g.node(_inserted(g, p, GATE)[0])["attrs"]["out"]),
                   (stride, lambda p: g.node(_inserted(g, p, GATE)[0])["attrs"]["stride"])]
        args = [self._channels(path).text, residual.text, "kernel_size=1"] + ([f"stride={stride.text}"]
                                                                              if stride.text != "1" else [])
        return call("self.gate = nn.Conv2d", args, 8)

    def _stride_sym(self, value: int) -> Sym:
        # A stride the shortcut derived from shapes: the block's own `stride` where it has one.
        if not self.literal and "stride" in self.params:
            return Sym(self.params["stride"], 4, ast.Var("stride", None))
        return Sym.literal(value)


def _variable(label: str) -> str:
    """A local variable for a label: `se.fc1` -> `se_fc1`; never one the generated code uses."""
    name = label.replace(".", "_")
    return name + "_" if name in _RESERVED or not name.isidentifier() else name


def _peer(graph: Graph, node: str, path: str, prototype: str) -> str:
    """The node of block `path` that is to it what `node`, a node of block `prototype` or that
    block's input, is to `prototype`."""
    if graph.node(node)["scope"] != prototype:
        return graph.blocks[path].input  # the prototype's input: it comes from outside its block
    return f"{path}.{graph.node(node)['label']}"


def _shortcut_call(graph: Graph, path: str) -> str | None:
    """The module a policy inserted for this block, as the network builds it."""
    for add in graph.scope_nodes(path):
        applied = graph.node(add)["attrs"].get("applied") if graph.node(add)["op"] == "add" else None
        if applied:  # a user-defined policy: its helper, named after it
            c_in, channels, stride = applied
            return f"{_policy_function(graph.node(add)['attrs']['policy'])}({c_in}, {channels}, {stride})"
    projection = _inserted(graph, path, PROJECTION)
    if projection:  # B or C: its conv, then its bn
        conv = graph.node(projection[0])["attrs"]
        c_in = graph.shape(graph.inputs(projection[0])[0])[0]
        stride = f", stride={conv['stride']}" if conv["stride"] != 1 else ""
        return f"projection({c_in}, {conv['out']}{stride})"
    pad = _inserted(graph, path, PAD)
    if pad:
        a = graph.node(pad[0])["attrs"]
        return f"ZeroPadShortcut({a['stride']}, {a['pad_before']}, {a['pad_after']})"
    return None


def _policy_function(policy: str) -> str:
    """A user policy's helper: `avg_down` as itself, kept clear of Python's names (the module's
    own, HELPERS, are refused as policy names when the spec is loaded)."""
    return policy + "_" if policy in _RESERVED else policy


def policy_helper(graph: Graph, name: str) -> list[str]:
    """`def NAME(in_channels, channels, stride) -> nn.Sequential`, its layers written with the
    policy's own expressions, keyed as its labels say (`downsample.0` -> 0, `downsample.conv` ->
    conv)."""
    policy = graph.policies[name]
    names = _Namespace({"in_channels"})
    params = {p.name: names.fresh(p.name, "_") for p in policy.params}
    params[IN] = "in_channels"
    # One instance, to give each layer its attributes and labels (the body is one chain).
    path, add = next((n, a) for n in graph.blocks for a in graph.scope_nodes(n)
                     if graph.node(a)["op"] == "add" and graph.node(a)["attrs"].get("policy") == name
                     and graph.node(a)["attrs"].get("applied"))
    chain = _inserted(graph, path, PROJECTION)
    env = {policy.params[0].name: graph.node(add)["attrs"]["applied"][1],
           policy.params[1].name: graph.node(add)["attrs"]["applied"][2]}
    channels = Sym("in_channels", 4, ast.Var(IN, None))
    ctors, keys = [], []
    for n in chain:
        node = graph.node(n)

        def sym(key: str, node=node) -> Sym:
            expr = node["exprs"].get(key)
            return Sym.literal(node["attrs"][key]) if expr is None else render(expr, params, env)
        layer = _Layer(sym, channels, graph.shape(graph.inputs(n)[0]))
        ctors.append(_module(node["op"]).build(layer, node["attrs"]))
        keys.append(node["label"].split(".", 1)[1])
        channels = layer.sym("out") if node["op"] in ("conv", "fc") else channels
    head = (f"def {_policy_function(name)}(in_channels: int, {params[policy.params[0].name]}: int, "
            f"{params[policy.params[1].name]}: int) -> nn.Sequential:")
    lines = [head, f'    """The shortcut of policy `{name}` where the shape changes."""']
    if keys == [str(i) for i in range(len(keys))]:
        body = _sequential_of("return", ctors)
        body[0] = "return nn.Sequential("
    else:
        body = ["return nn.Sequential(OrderedDict(["]
        for key, (ctor, args) in zip(keys, ctors):
            inner = call(ctor, args, 12 + len(key) + 6)
            body += [f'    ("{key}", {inner[0]}'] + [f"    {line}" for line in inner[1:-1]] + \
                    ([f"    {inner[-1]})," ] if len(inner) > 1 else [])
            if len(inner) == 1:
                body[-1] += "),"
        body.append("]))")
    return lines + [f"    {line}" for line in body]


class _Generator:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.names = _Namespace({_policy_function(p) for p in graph.policies})
        self.classes: list[_Class] = []
        self.calls: dict[str, tuple[str, list[str]]] = {}  # block path -> (class, constructor arguments)
        self.helpers: set[str] = set()
        self.kinds: dict[str, tuple[set[str], dict[str, bool]]] = {}  # definition -> `kind_arguments`

    def run(self) -> None:
        by_definition: dict[str, list[str]] = {}
        for stage in self.graph.stages.values():
            for path in stage.blocks:
                by_definition.setdefault(self.graph.blocks[path].block, []).append(path)
        for definition, paths in by_definition.items():
            self.kinds[definition] = kind_arguments(self.graph, paths)
            if not self._symbolic(definition, paths):
                self._literal(definition, paths)
        for path in self.calls:
            made = _shortcut_call(self.graph, path)
            if made:
                self.helpers.add(made.split("(")[0])
        self.policies = sorted(
            {
                self.graph.node(a)["attrs"]["policy"]
                for p in self.calls
                for a in self.graph.scope_nodes(p)
                if self.graph.node(a)["op"] == "add" and self.graph.node(a)["attrs"].get("applied")
            }
        )

    def _params(self, definition: str) -> dict[str, str]:
        names = _Namespace()
        params = {}
        signature = self.graph.signatures[definition]
        for name, _ in signature.params + signature.lets:  # `self` -> `self_`, `print` -> `print_`
            base = name + "_layer" if name in self.kinds[definition][1] else name  # timm's `act_layer`
            params[name] = names.fresh(base, "_") if base not in names.used else names.fresh(base + "_", "_")
        params[IN] = names.fresh("in_channels", "_")
        if "classes" not in params:
            params["classes"] = str(self.graph.classes)  # a network-level name: its value
        return params

    def _symbolic(self, definition: str, paths: list[str]) -> bool:
        """One class whose constructor takes the block's parameters; False where some block's
        integers are not what the spec's expressions give for it."""
        g = self.graph
        params = self._params(definition)
        shortcut = any(_shortcut_call(g, p) for p in paths)
        gated = {g.node(n)["attrs"]["gated"] for p in paths for n in g.scope_nodes(p)
                 if g.node(n)["op"] == "add"}
        if len(gated) > 1:
            return False
        emitter = _BlockEmitter(g, params, literal=False, kinds=self.kinds[definition][1])
        try:
            emitted = emitter.emit(paths[0], shortcut)
            for path in paths:
                env = block_env(g, path)
                if emitter.emit(path, shortcut).structure != emitted.structure:
                    return False
                if any(sym.value(env) != actual(path) for sym, actual in emitted.checks):
                    return False
        except (Inexpressible, ResdslError):  # unexplained by the spec's expressions: literal classes
            return False
        signature = self._signature(definition, params, shortcut)
        lets = self._lets(definition, params, paths[0])
        cls = _Class(self.names.fresh(class_name(definition)), self._doc(definition, paths),
                     signature=signature, init=self._defaults(definition, params) + lets + emitted.init
                     + (["self.downsample = downsample"] if shortcut else []), forward=emitted.forward)
        self.classes.append(cls)
        for path in paths:
            self.calls[path] = self._call(cls.name, definition, params, path, shortcut)
        return True

    def _signature(self, definition: str, params: dict[str, str], shortcut: bool) -> list[str]:
        parts = ["self", f"{params[IN]}: int"]
        keyword_only = False
        for name, default in self._class_params(definition):
            earlier = self._before(definition, name)
            if default is None and not keyword_only and any(d is not None for _, d in earlier):
                parts.append("*")  # a required parameter after one with a default: keyword-only
                keyword_only = True
            kind = "float" if self._real_param(definition, name) else "int"
            if name in self.kinds[definition][1]:
                kind = "type[nn.Module]"
            if default is None:
                parts.append(f"{params[name]}: {kind}")
            elif self._kind_default(definition, default):
                parts.append(f"{params[name]}: {kind} = {constructor(default.name)}")
            elif _constant(default):
                parts.append(f"{params[name]}: {kind} = {render(default, params).text}")
            else:
                parts.append(f"{params[name]}: {kind} | None = None")
        if shortcut:
            parts.append("downsample: nn.Module | None = None")
        head = f"def __init__({', '.join(parts)}) -> None:"
        if 4 + len(head) <= LINE_LIMIT:
            return [head]
        return ["def __init__("] + ["    " + line.strip() for line in _pack(parts, 8)] + [") -> None:"]

    def _class_params(self, definition: str) -> tuple[tuple[str, ast.Expr | None], ...]:
        """The definition's parameters as its class takes them. A default that reads the block's
        place in the network (`rate = 0.2 * block_index / num_blocks`) is no default there: the
        class cannot know its place, so the network passes that value to every block."""
        kinds, taken = self.kinds[definition]
        return tuple((name, None if default is not None and _reads_position(default) else default)
                     for name, default in self.graph.signatures[definition].params
                     if name not in kinds or name in taken)

    def _kind_default(self, definition: str, default: ast.Expr) -> bool:
        """Whether a parameter's default is a layer kind itself (`act = relu`), not another's."""
        return (isinstance(default, ast.Var) and kind_of(default.name) is not None
                and default.name not in dict(self.graph.signatures[definition].params))

    def _real_param(self, definition: str, name: str) -> bool:
        """Whether a block parameter holds a float (a rate) in any block of the definition."""
        return any(
            isinstance(b.args.get(name), float) for b in self.graph.blocks.values() if b.block == definition
        )

    def _before(self, definition: str, name: str):
        params = self._class_params(definition)
        return params[:[n for n, _ in params].index(name)]

    def _defaults(self, definition: str, params: dict[str, str]) -> list[str]:
        """`if p is None: p = <expr>` for defaults that use earlier parameters."""
        lines = []
        for name, default in self._class_params(definition):
            if default is not None and not _constant(default) and not self._kind_default(definition, default):
                lines += [f"if {params[name]} is None:",
                          f"    {params[name]} = {render(default, params).text}"]
        return lines

    def _lets(self, definition: str, params: dict[str, str], prototype: str) -> list[str]:
        """`mid = width * groups` for each `let` the class's layers use, in the spec's order."""
        g = self.graph
        used = {v.name for n in g.scope_nodes(prototype) for e in g.node(n)["exprs"].values()
                for v in ast.variables(e)}
        lets = g.signatures[definition].lets
        for name, expr in reversed(lets):  # a let used makes the lets it reads used
            if name in used:
                used |= {v.name for v in ast.variables(expr)}
        env = block_env(g, prototype)
        return [f"{params[name]} = {render(expr, params, env).text}" for name, expr in lets if name in used]

    def _call(self, cls: str, definition: str, params: dict[str, str], path: str, shortcut: bool) -> str:
        g = self.graph
        block = g.blocks[path]
        args = [str(g.shape(block.input)[0])]
        scope = {"classes": g.classes}
        keyword = False
        for name, default in self._class_params(definition):
            value = block.args[name]
            if default is not None:
                keyword = True
                if evaluate(default, scope) != value:
                    args.append(f"{params[name]}={constructor(value.op) if isinstance(value, Kind) else value}")
            else:
                args.append(f"{params[name]}={value}" if keyword else str(value))
            scope[name] = value
        made = _shortcut_call(g, path)
        if made:
            args.append(f"downsample={made}")
        return cls, args

    def _literal(self, definition: str, paths: list[str]) -> None:
        """One class per distinct body, its integers written out."""
        g = self.graph
        emitter = _BlockEmitter(g, self._params(definition), literal=True)
        bodies: dict[tuple, tuple[_Class, list[str]]] = {}
        for path in paths:
            shortcut = _shortcut_call(g, path) is not None
            emitted = emitter.emit(path, shortcut)
            key = (tuple(emitted.init), tuple(emitted.forward))
            if key not in bodies:
                handed = ", downsample: nn.Module | None = None" if shortcut else ""
                signature = [f"def __init__(self{handed}) -> None:"]
                cls = _Class(self.names.fresh(class_name(definition)), "", signature=signature,
                             init=emitted.init + (["self.downsample = downsample"] if shortcut else []),
                             forward=emitted.forward)
                bodies[key] = (cls, [])
                self.classes.append(cls)
            bodies[key][1].append(path)
            made = _shortcut_call(g, path)
            self.calls[path] = bodies[key][0].name, [f"downsample={made}"] if made else []
        for cls, members in bodies.values():
            cls.doc = self._doc(definition, members)

    def _doc(self, definition: str, paths: list[str]) -> str:
        g = self.graph
        shapes = {(fmt_shape(g.shape(g.blocks[p].input)), fmt_shape(g.shape(g.blocks[p].output)))
                  for p in paths}
        if len(paths) > 4:
            where = f"{paths[0]}, {paths[1]}, ... {paths[-1]} ({len(paths)} blocks)"
            if len(where) > 60:
                where = f"{paths[0]} ... {paths[-1]} ({len(paths)} blocks)"
        else:
            where = ", ".join(paths)
        shape = f", {' -> '.join(shapes.pop())}" if len(shapes) == 1 else ""
        return f"`{definition}` block{shape}; used at {where}."

    def main_class(self) -> _Class:
        g = self.graph
        doc = f"{g.name}: {fmt_shape(g.shape(INPUT))} -> {_returned(g)}."
        cls = _Class(self.names.fresh(camel(g.name)), doc, signature=["def __init__(self) -> None:"])
        entries, steps = [], []
        returned = {}  # node -> the output names it is returned as
        for name, node in g.outputs:
            returned.setdefault(node, []).append(name)
        for kind, item in g.layout:
            if kind == "stage":  # an nn.Sequential of its blocks, under its (maybe dotted) name
                entries.append((item, STAGE, [self.calls[p] for p in g.stages[item].blocks]))
                last = g.blocks[g.stages[item].blocks[-1]].output
                captured = _captures(returned.get(last, []))
                steps.append(
                    _Step(item, ["x = {m}(x)"] + captured, item, "", None if captured else ("x", "x"))
                )
                continue
            node = g.node(item)
            source = g.inputs(item)[0]
            layer = _Layer(lambda key, a=node["attrs"]: Sym.literal(a[key]), Sym.literal(g.shape(source)[0]),
                           g.shape(source))
            ctor, args = _module_call(g, node["op"], layer, node["attrs"], source)
            entries.append((node["label"], ctor, args))
            step = _layer_step(node["label"], node["op"], item, source, "x", "x", g.shape(source))
            if item in returned:  # kept apart from any nn.Sequential, to be returned
                step.lines, step.call = step.lines + _captures(returned[item]), None
            steps.append(step)
        init, forward = _assemble(g, entries, steps)
        cls.init += init
        if g.outputs:
            cls.returns = "dict[str, Tensor]"
            cls.forward = ["outputs: dict[str, Tensor] = {}"] + forward + ["return outputs"]
        else:
            cls.forward = forward + ["return x"]
        return cls


def _returned(graph: Graph) -> str:
    """What forward returns, for docstrings: `1000`, or `a dict of layer1, ..., layer4`."""
    if not graph.outputs:
        return fmt_shape(graph.shape(graph.output))
    names = ", ".join(name for name, _ in graph.outputs)
    return f"a dict of {names}" if len(names) <= 60 else f"a dict of {len(graph.outputs)} feature maps"


def _captures(names: list[str]) -> list[str]:
    return [f'outputs["{name}"] = x' for name in names]


@dataclass
class _Step:
    """One statement of a forward: the lines that run it, `{m}` standing for its module (reached
    through its containers), and, for a plain call `OUT = {m}(ARG)`, its parts, so that a run of
    them can become one nn.Sequential call."""
    label: str | None
    lines: list[str]
    name: str  # its graph node
    source: str  # the node it reads
    call: tuple[str, str] | None = None  # (OUT, ARG) of a plain call


def _layer_step(label: str, op: str, name: str, source: str, arg: str, out: str, in_shape: tuple) -> _Step:
    if op == "fc" and len(in_shape) == 3:
        return _Step(label, [f"{out} = torch.flatten({arg}, 1)", f"{out} = {{m}}({out})"], name, source)
    return _Step(label, [f"{out} = {{m}}({arg})"], name, source, (out, arg))


def _assemble(
    graph: Graph, entries: list[tuple[str, str, list[str]]], steps: list[_Step]
) -> tuple[list, list]:
    """A class's `__init__` and `forward` lines from its layers, nesting dotted labels. An entry
    is (label, constructor, arguments), or ("", "", lines) for lines to write as they are.

    `conv1.0`, `conv1.1`, ... that run one after the other, each reading the one before, become
    one nn.Sequential (`self.conv1 = nn.Sequential(...)`, called once), as torchvision writes
    `features` and `classifier`. Other containers hold their layers as attributes (`self.se.fc1`),
    or by key where a key is not an identifier (`self.head["0"]`).
    """
    labels = [label for label, _, _ in entries if label]
    containers: dict[str, list[str]] = {}  # container path -> its direct children's keys
    for label in labels:
        parts = label.split(".")
        for i in range(1, len(parts)):
            keys = containers.setdefault(".".join(parts[:i]), [])
            if parts[i] not in keys:
                keys.append(parts[i])
    stages = {label for label, ctor, _ in entries if ctor == STAGE}
    at: dict[str, list[int]] = {}  # container -> where its layers' steps are
    for i, step in enumerate(steps):
        if step.label:
            at.setdefault(step.label.rpartition(".")[0], []).append(i)
    sequential = {c for c in containers if _runs_in_sequence(graph, c, containers, steps, at.get(c, []))
                  and not any(f"{c}.{key}" in stages for key in containers[c])}

    def reach(path: str) -> str:
        parts, text = path.split("."), "self"
        for i, part in enumerate(parts):
            parent = ".".join(parts[:i])
            text += f'["{part}"]' if parent in containers and _keyed(containers[parent]) else f".{part}"
        return text

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
            if path in sequential:
                init += _sequential_of(reach(path), [ctors[f"{path}.{key}"] for key in containers[path]])
                made.update(f"{path}.{key}" for key in containers[path])
                break
            init.append(f"{reach(path)} = {'nn.ModuleDict()' if _keyed(containers[path]) else 'nn.Module()'}")
        if label not in made:
            made.add(label)
            ctor, args = ctors[label]
            init += (
                _sequential(reach(label), args)
                if ctor == STAGE
                else call(f"{reach(label)} = {ctor}", args, 8)
            )
    forward: list[str] = []
    i = 0
    while i < len(steps):
        step = steps[i]
        parent = step.label.rpartition(".")[0] if step.label else ""
        if parent in sequential:
            n = len(containers[parent])
            forward.append(f"{steps[i + n - 1].call[0]} = {reach(parent)}({step.call[1]})")
            i += n
            continue
        forward += [line.replace("{m}", reach(step.label)) if step.label else line for line in step.lines]
        i += 1
    return init, forward


STAGE = "<stage>"  # an entry's constructor: the stage's blocks, as one nn.Sequential


def _keyed(keys: list[str]) -> bool:
    """Whether a container's children need keys (`["0"]`) rather than attribute names."""
    return any(not k.isidentifier() for k in keys)


def _runs_in_sequence(
    graph: Graph, container: str, containers: dict[str, list[str]], steps: list[_Step], at: list[int]
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
    return all(b.source == a.name and graph.users(a.name) == [b.name] for a, b in zip(run, run[1:]))


def _sequential_of(target: str, ctors: list[tuple[str, list[str]]]) -> list[str]:
    lines = [f"{target} = nn.Sequential("]
    for ctor, args in ctors:
        inner = call(ctor, args, 12)
        lines += [f"    {line}" for line in inner[:-1]] + [f"    {inner[-1]},"]
    return lines + [")"]


def _reads_position(expr: ast.Expr) -> bool:
    return any(var.name in POSITION for var in ast.variables(expr))


def _constant(expr: ast.Expr) -> bool:
    """Whether a default needs no other parameter (so it can be Python's default)."""
    return next(ast.variables(expr), None) is None


def _pack(parts: list[str], indent: int) -> list[str]:
    lines, current = [], ""
    for part in parts:
        piece = part + ","
        if current and indent + len(current) + 1 + len(piece) > LINE_LIMIT:
            lines.append(current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    return lines + [current]


def _sequential(target: str, calls: list[tuple[str, list[str]]]) -> list[str]:
    """`target = nn.Sequential(A(64), *[B(256, 64) for _ in range(5)])`, runs of one call written
    once, one part a line where they do not fit on one."""
    runs: list[tuple[tuple[str, list[str]], int]] = []
    for made in calls:
        if runs and runs[-1][0] == made:
            runs[-1] = (made, runs[-1][1] + 1)
        else:
            runs.append((made, 1))
    texts = [f"{head}({', '.join(args)})" if n == 1 else f"*[{head}({', '.join(args)}) for _ in range({n})]"
             for (head, args), n in runs]
    one = f"{target} = nn.Sequential({', '.join(texts)})"
    if 8 + len(one) <= LINE_LIMIT:
        return [one]
    lines = [f"{target} = nn.Sequential("]
    for ((head, args), n), text in zip(runs, texts):
        if 12 + len(text) + 1 <= LINE_LIMIT:
            lines.append(f"    {text},")
            continue
        inner = call(head, args, 12 + 2 * (n > 1))
        if n > 1:
            inner = [f"*[{inner[0]}", *inner[1:-1], f"{inner[-1]} for _ in range({n})]"]
        lines += [f"    {line}" for line in inner[:-1]] + [f"    {inner[-1]},"]
    return lines + [")"]


def docstring_text(text: str) -> str:
    """`text` safe inside a triple-quoted docstring: backslashes, quotes and anything not
    printable ASCII escaped, so a file name cannot end the docstring or break the module."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in escaped)
    return escaped.replace("\\", "\\\\").replace('"', '\\"')


def check(graph: Graph) -> None:
    """Refuse, located and all at once, every op of `graph` this backend has no converter for."""
    check_supported(graph, "torch", CONVERTERS)


def generate(graph: Graph, source_name: str | None = None) -> str:
    check(graph)
    gen = _Generator(graph)
    gen.run()
    main = gen.main_class()
    params, macs = totals(graph)
    return _template().render(
        network=graph.name, source=docstring_text(source_name) if source_name else f"network `{graph.name}`",
        input=fmt_shape(graph.shape(INPUT)),
        output=_returned(graph),
        params=f"{params:,}", macs=f"{macs:,}", blocks=gen.classes, main=main,
        projection="projection" in gen.helpers, zero_pad="ZeroPadShortcut" in gen.helpers,
        drop_path=any(graph.node(n)["op"] == "drop_path" for n in graph.order()),
        policies=[policy_helper(graph, p) for p in gen.policies],
        ordered_dict=any("OrderedDict" in line for p in gen.policies for line in policy_helper(graph, p)))


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
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    filename = f"<resdsl:{name}:{digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"resdsl_generated_{digest}")
    module.__file__ = filename
    sys.modules[module.__name__] = module
    exec(compile(source, filename, "exec"), module.__dict__)
    return module
