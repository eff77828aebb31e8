"""Op -> what a layer becomes in generated PyTorch: a module and its constructor arguments, an
expression of its operands, or a module the network hands in. Arguments are `Sym`s, so they
read as the spec wrote them; the rule for writing `inplace=True` is here too."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod

from ... import ast
from ...ir import INPUT, Graph
from ...kinds import Kind
from ...lower import evaluate
from ...ops import OPS
from ...ops.rules import blur_padding, eca_kernel
from .lines import call
from .symbols import Sym


@dataclass
class Layer:
    """What a converter sees: the node's attributes as `Sym`s, its input's channels."""
    sym: Callable[[str], Sym]  # attribute -> Sym (the spec's expression, or a literal)
    channels: Sym  # the input's channel count
    in_shape: tuple[int, ...]


def _conv(layer: Layer, a: dict) -> tuple[str, list[str]]:
    args = [layer.channels.text, layer.sym("out").text, f"kernel_size={layer.sym('kernel').text}"]
    for key, default in (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)):
        sym = layer.sym(key)
        # Written where it differs from PyTorch's default, or where the spec wrote a parameter (`s=stride`).
        if a[key] != default or sym.expr is not None and not isinstance(sym.expr, ast.Int):
            args.append(f"{key}={sym.text}")
    return "nn.Conv2d", args + (["bias=False"] if not a["bias"] else [])


def _eps(layer: Layer, a: dict, op: str) -> list[str]:
    """`eps=` where it is not PyTorch's default, or where the spec wrote a parameter (`eps=eps`)."""
    eps = layer.sym("eps")
    if a["eps"] != OPS[op].defaults["eps"] or eps.expr is not None and not isinstance(
            eps.expr, (ast.Int, ast.Float)):
        return [f"eps={eps.text}"]
    return []


def _bn(layer: Layer, a: dict) -> tuple[str, list[str]]:
    return "nn.BatchNorm2d", [layer.channels.text, *_eps(layer, a, "bn")]


def _gn(layer: Layer, a: dict) -> tuple[str, list[str]]:
    return "nn.GroupNorm", [layer.sym("groups").text, layer.channels.text, *_eps(layer, a, "gn")]


def _ln(layer: Layer, a: dict) -> tuple[str, list[str]]:
    """nn.LayerNorm over the channels, called on the channels-last map (see `layout.layer_step`),
    as torchvision's LayerNorm2d; its eps always written, as ConvNeXt's 1e-6 is not PyTorch's 1e-5."""
    return "nn.LayerNorm", [layer.channels.text, f"eps={layer.sym('eps').text}"]


def _scale(layer: Layer, a: dict) -> tuple[str, list[str]]:
    """A parameter of the class, not a module: timm's `gamma`, torchvision's `layer_scale`."""
    shape = f"({layer.channels.text},)" if a["dims"] == 1 else f"({layer.channels.text}, 1, 1)"
    return "nn.Parameter", [f"torch.full({shape}, {layer.sym('init').text})"]


def _channel_conv(layer: Layer, a: dict) -> tuple[str, list[str]]:
    """timm's EcaModule.conv: nn.Conv1d(1, 1, k), run on the pooled vector viewed as (N, 1, C)
    (see `layout.layer_step`). ECA's own size (kernel 0) in the class's terms: timm's
    int(abs(log2(C) + 1) / 2) is C.bit_length() // 2 for every C, made odd by `| 1`."""
    if a["kernel"]:
        size = layer.sym("kernel")
    elif layer.channels.expr is None:
        size = Sym.literal(eca_kernel(layer.in_shape[0]))
    else:
        channels = layer.channels.text if layer.channels.prec == 4 else f"({layer.channels.text})"
        size = Sym(f"max({channels}.bit_length() // 2 | 1, 3)")
    padding = str(int(size.text) // 2) if size.text.isdigit() else '"same"'  # odd: k // 2 at both ends
    return "nn.Conv1d", ["1", "1", f"kernel_size={size.text}", f"padding={padding}", "bias=False"]


def _blurpool(layer: Layer, a: dict) -> tuple[str, list[str]]:
    """timm's BlurPool2d from stock modules, its filter held in no tensor: the k x k binomial filter
    is k - 1 2x2 box filters applied in turn ([1, 2, 1] / 4 = [1, 1] / 2 twice), so a reflect pad
    and k - 1 2x2 average pools, the last at the stride, compute it exactly."""
    stride = layer.sym("stride")
    pad = blur_padding(a) if stride.expr is None or isinstance(stride.expr, ast.Int) else (
        f"({stride.text} + {a['kernel'] - 2}) // 2")
    pools = ["nn.AvgPool2d(2, stride=1)"] * (a["kernel"] - 2) + [f"nn.AvgPool2d(2, stride={stride.text})"]
    return "nn.Sequential", [f"nn.ReflectionPad2d({pad})", *pools]


def _window_args(layer: Layer, a: dict) -> list[str]:
    return [f"kernel_size={layer.sym('kernel').text}", f"stride={layer.sym('stride').text}",
            f"padding={layer.sym('padding').text}"] + (["ceil_mode=True"] if a["ceil"] else [])


def _avgpool(layer: Layer, a: dict) -> tuple[str, list[str]]:
    if not a["kernel"]:
        size = layer.sym("size").text
        return "nn.AdaptiveAvgPool2d", [f"({size}, {size})"]
    return "nn.AvgPool2d", _window_args(layer, a) + ([] if a["count_pad"] else ["count_include_pad=False"])


def _fc(layer: Layer, a: dict) -> tuple[str, list[str]]:
    spatial = prod(layer.in_shape[1:])
    features = layer.channels.text if spatial == 1 else str(prod(layer.in_shape))  # after torch.flatten
    return "nn.Linear", [features, layer.sym("out").text]


@dataclass(frozen=True)
class Module:
    """A layer the generated class holds as a module: `build` gives its (constructor, arguments);
    `written` names the attributes those arguments write, each checked against every block a
    class stands for. An `inplace` one (`relu`, as torchvision writes it) gets `inplace=True`
    unless its input may not be overwritten: see `overwritable`."""
    build: Callable[[Layer, dict], tuple[str, list[str]]]
    written: tuple[str, ...] = ()
    inplace: bool = False


@dataclass(frozen=True)
class Join:
    """A join of named values, one expression of its operands' variables in `forward` (with
    `statements`: the lines that assign it to the target, given the variables and the target).
    (The residual `add shortcut` is the block's own statement: see `block.BlockEmitter._add`.)"""
    write: Callable[..., str | list[str]]
    statements: bool = False


@dataclass(frozen=True)
class Expression:
    """A layer that holds no module: one expression of its input in `forward` (`write`: the
    input's variable, the layer, its attributes), its channels `channels` of the layer; the
    attributes `written` are literal there, the same in every block of a class."""
    write: Callable[[str, Layer, dict], str]
    channels: Callable[[Layer, dict], Sym]
    written: tuple[str, ...] = ()


def _chunk(x: str, layer: Layer, a: dict) -> str:
    """torch.chunk's view of the channels, as timm's Res2Net and SK split them; its numbers
    literal, as `forward` sees no constructor argument (each block of the class is checked to
    have them)."""
    return f"{x}.chunk({a['n']}, 1)[{a['index']}]"


def _chunk_channels(layer: Layer, a: dict) -> Sym:
    channels, n = layer.channels, layer.sym("n")
    if channels.expr is None:
        return Sym.literal(layer.in_shape[0] // a["n"])
    expr, times = channels.expr, f" * {a['n']}"
    if isinstance(expr, ast.BinOp) and expr.op == "*" and isinstance(expr.rhs, ast.Int) \
            and expr.rhs.value == a["n"] and channels.text.endswith(times):  # (w * 4) // 4 is w
        text = channels.text.removesuffix(times)
        return Sym(text, 2 if " " in text and not text.startswith("(") else 4, expr.lhs)
    lhs = channels.text if channels.prec >= 2 else f"({channels.text})"
    rhs = n.text if n.prec > 2 else f"({n.text})"
    return Sym(f"{lhs} // {rhs}", 2, ast.BinOp("//", expr, n.expr or ast.Int(a["n"], None), None))


def _shuffle(x: str, layer: Layer, a: dict) -> str:
    """ShuffleNet's channel_shuffle in one line: the channels as (groups, C / groups), transposed,
    flattened back; its groups literal, as a chunk's numbers are."""
    return f"{x}.unflatten(1, ({a['groups']}, -1)).transpose(1, 2).flatten(1, 2)"


def _select(operands: list[str], target: str) -> list[str]:
    """The softmax over P of the logits viewed (N, P, C, 1, 1), then the branches stacked
    (N, P, C, H, W), weighted by it and summed: timm's SelectiveKernel and SplitAttn (radix-major
    logits). The weights go to the target, whose value no branch is (a branch is read here, after
    the logits were computed from it or beside it, so it is kept in a variable of its own)."""
    *branches, logits = operands
    first, *rest = call("torch.stack", [f"[{', '.join(branches)}]", "1"], 8 + len(target) + 4)
    weighted = [f"{target} = ({first}", *rest[:-1], f"{rest[-1]} * {target}).sum(1)"] if rest else \
        [f"{target} = ({first} * {target}).sum(1)"]
    return [f"{target} = {logits}.unflatten(1, ({len(branches)}, -1)).softmax(1)", *weighted]


@dataclass(frozen=True)
class Handed:
    """Made only by shortcut legalization: the network builds its module (ZeroPadShortcut,
    projection(), a policy's helper) and hands it to the block as `downsample`."""


Converter = Module | Join | Expression | Handed
CONVERTERS: dict[str, Converter] = {
    "conv": Module(_conv, ("out", "kernel", "stride", "padding", "dilation", "groups")),
    "bn": Module(_bn, ("eps",)),
    "gn": Module(_gn, ("groups", "eps")),
    "ln": Module(_ln, ("eps",)),
    "linear": Module(lambda layer, a: ("nn.Linear", [layer.channels.text, layer.sym("out").text]), ("out",)),
    "scale": Module(_scale, ("dims", "init")),
    "channel_conv": Module(_channel_conv, ("kernel",)),
    "blurpool": Module(_blurpool, ("stride",)),  # its kernel is the number of pools, never a name
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
    "select": Join(_select, statements=True),
    "chunk": Expression(_chunk, _chunk_channels, ("index", "n")),
    "shuffle": Expression(_shuffle, lambda layer, a: layer.channels, ("groups",)),
    "pad": Handed(),
}


def module_of(op: str) -> Module:
    converter = CONVERTERS[op]  # every op is in the table: `generate` checked before emitting
    assert isinstance(converter, Module), f"{op} is not a module"
    return converter


def module_call(graph: Graph, op: str, layer: Layer, a: dict, source: str,
                 inplace: bool | None = None) -> tuple[str, list[str]]:
    """A layer's (constructor, arguments); an in-place one is in place only where its input may
    be overwritten (see `overwritable`). `inplace`, where given, says whether the module can be
    (every kind a parameter takes can)."""
    module = module_of(op)
    ctor, args = module.build(layer, a)
    if inplace is None:
        inplace = module.inplace
    if inplace and overwritable(graph, source):
        args = [*args, "inplace=True"]
    return ctor, args


def overwritable(graph: Graph, value: str) -> bool:
    """Whether a layer reading `value` may overwrite it: nothing else reads it (the block input
    that feeds the shortcut), the caller did not pass it (the network's input), and forward does
    not return it (a named output: `outputs["stem_bn"] = x` holds the tensor, not a copy)."""
    return len(graph.users(value)) == 1 and value != INPUT and all(node != value for _, node in graph.outputs) \
        and not is_view(graph, value)


def is_view(graph: Graph, value: str) -> bool:
    """Whether `value` may be a view of another tensor, which others read: written in place, it
    would change them. A chunk of the channels is one; a shuffle may be (in 1 or C groups it
    moves no channel and flatten gives a view), in whichever block of a class, so it counts too."""
    return graph.node(value).op in ("chunk", "shuffle")


def _default_call(op: str) -> tuple[str, list[str]]:
    """A layer kind's (module class, arguments) at its defaults, on `c` channels."""
    attrs = {key: 1 if value is None else value for key, value in OPS[op].defaults.items()}
    return module_of(op).build(Layer(lambda key: Sym.literal(attrs[key]), Sym("c"), (1, 1, 1)), attrs)


def constructor(op: str) -> str:
    """The module class a layer kind's layers are made with (`silu` -> `nn.SiLU`)."""
    return _default_call(op)[0]


def kind_arguments(graph: Graph, paths: list[str]) -> tuple[set[str], dict[str, bool]]:
    """A block definition's kind parameters (`act`), and those its class takes as constructor
    arguments, as timm's `act_layer=nn.ReLU`, each with whether every kind it takes works in
    place. A class takes one where some block gives it a kind other than its default, and no
    block `none` (its layer left out there, the blocks have different bodies), and every kind it
    takes is built from the same arguments (`norm_layer(c)` cannot make nn.GroupNorm(32, c));
    elsewhere the class writes its one kind as any layer, so a spec that changes no kind gets the
    class it always did."""
    blocks = [graph.blocks[p] for p in paths]
    defaults = dict(graph.signatures[blocks[0].block].params)
    kinds = {name for b in blocks for name, value in b.args.items() if isinstance(value, Kind)}
    taken: dict[str, bool] = {}
    for name in sorted(kinds):
        given = {b.args[name] for b in blocks}
        default = {evaluate(defaults[name], {**b.args, "classes": graph.classes}) for b in blocks}
        ops = {k.op for k in given | default}  # `none`, or a block given as a kind, is no module
        if given != default and ops <= CONVERTERS.keys() and len({tuple(_default_call(op)[1]) for op in ops}) == 1:
            taken[name] = all(module_of(op).inplace for op in ops)
    return kinds, taken
