"""The op table: for every node kind, its attributes, shape rule, parameter and MAC counts.

Shape inference, the summary and the verifier all read this one table; backends keep their own
converter tables keyed by the same op names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import inf, log2, prod
from typing import Any, Callable

Shape = tuple[int, ...]
Attrs = dict[str, Any]


class ShapeError(Exception):
    """Raised by a shape rule; the pass turns it into a located ResdslError."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def _window(size: int, kernel: int, stride: int, padding: int, what: str, dilation: int = 1,
            ceil: bool = False) -> int:
    span = dilation * (kernel - 1) + 1
    if ceil:  # PyTorch's rule: round up, but the last window must start inside the input or left padding
        out = -(-(size + 2 * padding - span) // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
    else:
        out = (size + 2 * padding - span) // stride + 1
    if out < 1:
        raise ShapeError(f"{what} with kernel {kernel}, stride {stride}, padding {padding} "
                         f"collapses a resolution of {size} below 1",
                         hint="use a larger input, fewer stride-2 stages, or more padding")
    return out


def _spatial(shape: Shape, what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(f"{what} needs a CxHxW feature map but gets a flat vector of {shape[0]}",
                         hint="put spatial layers before `flatten` or `fc`")
    return shape  # type: ignore[return-value]


def conv_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = _spatial(ins[0], "conv")
    k, s, p, g, d = attrs["kernel"], attrs["stride"], attrs["padding"], attrs["groups"], attrs["dilation"]
    for what, n in (("input", c), ("output", attrs["out"])):
        if n % g:
            raise ShapeError(f"groups={g} does not divide the {what} channels ({n})",
                             hint="choose a group count that divides both channel counts")
    return (attrs["out"], _window(h, k, s, p, "conv", d), _window(w, k, s, p, "conv", d))


def pool_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = _spatial(ins[0], "maxpool")
    k, s, p = attrs["kernel"], attrs["stride"], attrs["padding"]
    if 2 * p > k:
        raise ShapeError(f"maxpool padding {p} is more than half its kernel {k}",
                         hint="padding may be at most kernel // 2")
    ceil = bool(attrs["ceil"])
    return (c, _window(h, k, s, p, "maxpool", ceil=ceil), _window(w, k, s, p, "maxpool", ceil=ceil))


def avgpool_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = _spatial(ins[0], "avgpool")
    k, size = attrs["kernel"], attrs["size"]
    if k == 0:  # adaptive: to size x size (1x1: global average pooling)
        given = [key for key, unset in (("stride", 0), ("padding", 0), ("ceil", 0), ("count_pad", 1))
                 if attrs[key] != unset]
        if given:  # nn.AdaptiveAvgPool2d has none of them: they would be dropped without a word
            raise ShapeError(f"avgpool without a kernel pools to a size, and takes no {_and(given)}",
                             hint="give it a kernel (`avgpool k2 s2`) to pool windows, or drop "
                                  + ("them" if len(given) > 1 else "it"))
        if size > min(h, w):
            raise ShapeError(f"avgpool to {size}x{size} needs at least that resolution, gets {h}x{w}",
                             hint="pool to a smaller size")
        return (c, size, size)
    if size != 1:
        raise ShapeError("avgpool takes either a window (`k s p`) or an output `size`, not both",
                         hint="`avgpool k2 s2` pools windows; `avgpool size=7` pools to 7x7")
    s, p = attrs["stride"], attrs["padding"]
    if 2 * p > k:
        raise ShapeError(f"avgpool padding {p} is more than half its kernel {k}",
                         hint="padding may be at most kernel // 2")
    ceil = bool(attrs["ceil"])
    return (c, _window(h, k, s, p, "avgpool", ceil=ceil), _window(w, k, s, p, "avgpool", ceil=ceil))


def _and(keys: list[str]) -> str:
    quoted = [f"`{k}`" for k in keys]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def fc_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    return (attrs["out"],)


def same_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    return ins[0]


def map_shape(what: str):
    """Shape-preserving, but only on a feature map (BatchNorm2d, LocalResponseNorm)."""
    def shape(attrs: Attrs, ins: list[Shape]) -> Shape:
        return _spatial(ins[0], what)
    return shape


FLOAT32_TINY_LOG2 = -126  # float32's smallest normal number is 2 ** -126: below, precision drains to 0


def lrn_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    if attrs["size"] % 2 == 0:
        raise ShapeError(f"lrn size must be odd, not {attrs['size']}",
                         hint="an odd window is centred on its channel (AlexNet uses 5)")
    k, beta = attrs["k"], attrs["beta"]
    if k > 0 and beta * log2(k) < FLOAT32_TINY_LOG2:  # in logs: k ** beta itself may overflow a float
        raise ShapeError(f"lrn's k ** beta ({k:g} ** {beta:g}) is below float32's smallest normal number "
                         f"(about 1.2e-38)", hint="the output would divide by (nearly) 0 where a window is "
                                                  "zero, NaN or inf: raise k (AlexNet uses k=2) or lower beta")
    return _spatial(ins[0], "lrn")


def flatten_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    return (prod(ins[0]),)


def mul_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    """x * y where y broadcasts to x: equal shapes, or a per-channel Cx1x1 gate (SE)."""
    x, y = ins
    if len(x) != len(y) or any(b not in (a, 1) for a, b in zip(x, y)):
        raise ShapeError(f"mul needs the branch's shape to equal or broadcast to {fmt_shape(x)}, "
                         f"not {fmt_shape(y)}", hint="a per-channel gate is Cx1x1 with the same C")
    return x


def concat_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    if any(len(s) != 3 for s in ins) or len({s[1:] for s in ins}) != 1:
        raise ShapeError("concat needs feature maps of one resolution, not "
                         + ", ".join(fmt_shape(s) for s in ins), hint="pool or stride the branches alike")
    return (sum(s[0] for s in ins), *ins[0][1:])


def pad_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = ins[0]
    s = attrs["stride"]
    return (c + attrs["pad_before"] + attrs["pad_after"], (h - 1) // s + 1, (w - 1) // s + 1)


def conv_params(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    weights = out[0] * (ins[0][0] // attrs["groups"]) * attrs["kernel"] ** 2
    return weights + (out[0] if attrs["bias"] else 0)


def conv_macs(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return prod(out) * (ins[0][0] // attrs["groups"]) * attrs["kernel"] ** 2


def fc_params(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return prod(ins[0]) * out[0] + out[0]


def fc_macs(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return prod(ins[0]) * out[0]


def bn_params(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return 2 * out[0]  # weight and bias; running statistics are buffers, not parameters


def _zero(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return 0


@dataclass(frozen=True)
class Range:
    """Where a float attribute means something: from `low` (left out where `open`) to below `high`.
    `why` says what the attribute is, for the hint of a value outside."""
    low: float
    high: float = inf
    open: bool = False
    why: str = ""

    def __contains__(self, value: float) -> bool:
        return (value > self.low if self.open else value >= self.low) and value < self.high

    def describe(self) -> str:
        if self.high == inf:
            return f"{'greater than' if self.open else 'at least'} {self.low:g}"
        return f"in {'(' if self.open else '['}{self.low:g}, {self.high:g})"


PROBABILITY = Range(0.0, 1.0, why="a probability: at least 0, below 1")


@dataclass(frozen=True)
class OpInfo:
    """What the table knows about one op.

    `positional` names the attribute a bare expression sets (`conv 64` sets `out`);
    `defaults` lists the user-settable attributes (None: required); those in `floats` are
    real numbers (rates, coefficients), the rest integers; `flags` are 0 or 1; `ranges` bound
    a float attribute to where PyTorch computes something finite with it.
    """

    shape: Callable[[Attrs, list[Shape]], Shape]
    arity: tuple[int, ...] = (1,)
    defaults: dict[str, Any] = field(default_factory=dict)
    positional: str | None = None
    params: Callable[[Attrs, list[Shape], Shape], int] = _zero
    macs: Callable[[Attrs, list[Shape], Shape], int] = _zero
    user: bool = True  # may appear in a spec
    floats: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()
    ranges: dict[str, Range] = field(default_factory=dict)
    train_only: bool = False  # acts in training only: gone in eval, ONNX and TVM


OPS: dict[str, OpInfo] = {
    "input": OpInfo(lambda a, i: a["shape"], arity=(0,), user=False),
    "conv": OpInfo(
        conv_shape,
        defaults={"out": None, "kernel": 1, "stride": 1, "padding": 0, "groups": 1, "dilation": 1, "bias": 0},
        positional="out",
        params=conv_params,
        macs=conv_macs,
        flags=frozenset({"bias"}),
    ),
    "bn": OpInfo(map_shape("bn"), params=bn_params),
    "relu": OpInfo(same_shape),
    "leaky_relu": OpInfo(
        same_shape, defaults={"slope": 0.01}, positional="slope", floats=frozenset({"slope"})
    ),
    "sigmoid": OpInfo(same_shape),
    "softmax": OpInfo(same_shape),  # over channels
    "maxpool": OpInfo(
        pool_shape,
        defaults={"kernel": None, "stride": None, "padding": 0, "ceil": 0},
        flags=frozenset({"ceil"}),
    ),
    # `avgpool`: global; `avgpool size=7`: adaptive to 7x7; `avgpool k2 s2`: windows.
    "avgpool": OpInfo(
        avgpool_shape,
        defaults={"kernel": 0, "stride": 0, "padding": 0, "ceil": 0, "count_pad": 1, "size": 1},
        flags=frozenset({"ceil", "count_pad"}),
    ),
    "lrn": OpInfo(
        lrn_shape,
        defaults={"size": None, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
        positional="size",
        floats=frozenset({"alpha", "beta", "k"}),
        # nn.LocalResponseNorm divides by (k + alpha / size * sum of squares) ** beta.
        ranges={"k": Range(0.0, open=True, why="added to the window's squares before the power: at 0 a "
                                                 "window of zeros gives 0 / 0 = NaN (AlexNet uses k=2)"),
                "alpha": Range(0.0, why="the weight of the window's squares: a negative one can make the power's "
                                        "base negative, and the output NaN (AlexNet uses alpha=1e-4)"),
                "beta": Range(0.0, why="the power the input is divided by: a negative one multiplies instead, "
                                       "and overflows (AlexNet uses beta=0.75)")},
    ),
    "dropout": OpInfo(
        same_shape,
        defaults={"p": 0.5},
        positional="p",
        floats=frozenset({"p"}),
        ranges={"p": PROBABILITY},
        train_only=True,
    ),
    # Stochastic depth: drops a sample's whole branch in training, with rate `rate`.
    "drop_path": OpInfo(
        same_shape,
        defaults={"rate": None},
        positional="rate",
        floats=frozenset({"rate"}),
        ranges={"rate": PROBABILITY},
        train_only=True,
    ),
    "flatten": OpInfo(flatten_shape),
    "fc": OpInfo(fc_shape, defaults={"out": None}, positional="out", params=fc_params, macs=fc_macs),
    "add": OpInfo(same_shape, arity=(2, 3), user=False),
    "mul": OpInfo(mul_shape, arity=(2,), user=False),
    "concat": OpInfo(concat_shape, arity=tuple(range(2, 65)), user=False),
    "pad": OpInfo(pad_shape, user=False),
}

# Spec statements that are not layers of OPS but are handled by the lowering: joins.
STATEMENTS = ("add", "mul", "concat")
