"""The rules op definitions point at: shapes, the tensors a layer owns, MACs."""
from __future__ import annotations

from math import comb, log2, prod

from .schema import BUFFER, COUNTER, Attrs, Shape, ShapeError, Weight, hw, pair_text


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def _window(size: int, kernel: int, stride: int, padding: int, what: str, dilation: int = 1,
            ceil: bool = False, written: str = "", dimension: str = "resolution") -> int:
    """One output dimension; `written` says the kernel, stride and padding as the layer wrote them
    where they are (height, width) pairs, `dimension` which of the two this is."""
    span = dilation * (kernel - 1) + 1
    if ceil:  # PyTorch's rule: round up, but the last window must start inside the input or left padding
        out = -(-(size + 2 * padding - span) // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
    else:
        out = (size + 2 * padding - span) // stride + 1
    if out < 1:
        raise ShapeError(f"{what} with {written or f'kernel {kernel}, stride {stride}, padding {padding}'} "
                         f"collapses a {dimension} of {size} below 1",
                         hint="use a larger input, fewer stride-2 stages, or more padding")
    return out


def _windows(h: int, w: int, attrs: Attrs, what: str, dilation: int = 1, ceil: bool = False) -> tuple[int, int]:
    """The output height and width of a window op whose kernel, stride and padding are each square
    or a (height, width) pair."""
    k, s, p = attrs["kernel"], attrs["stride"], attrs["padding"]
    if not any(isinstance(v, tuple) for v in (k, s, p)):
        return _window(h, k, s, p, what, dilation, ceil), _window(w, k, s, p, what, dilation, ceil)
    written = f"kernel {pair_text(k)}, stride {pair_text(s)}, padding {pair_text(p)}"
    return tuple(_window(size, kd, sd, pd, what, dilation, ceil, written, dimension)  # type: ignore[return-value]
                 for size, kd, sd, pd, dimension in zip((h, w), hw(k), hw(s), hw(p), ("height", "width")))


def _half_kernel(attrs: Attrs, what: str) -> None:
    """PyTorch's pools pad at most half the kernel, in each dimension."""
    k, p = attrs["kernel"], attrs["padding"]
    if any(2 * pd > kd for kd, pd in zip(hw(k), hw(p))):
        raise ShapeError(f"{what} padding {pair_text(p)} is more than half its kernel {pair_text(k)}",
                         hint="padding may be at most kernel // 2")


def _spatial(shape: Shape, what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(f"{what} needs a CxHxW feature map but gets a flat vector of {shape[0]}",
                         hint="put spatial layers before `flatten` or `fc`")
    return shape  # type: ignore[return-value]


def conv_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = _spatial(ins[0], "conv")
    g = attrs["groups"]
    for what, n in (("input", c), ("output", attrs["out"])):
        if n % g:
            raise ShapeError(f"groups={g} does not divide the {what} channels ({n})",
                             hint="choose a group count that divides both channel counts")
    return (attrs["out"], *_windows(h, w, attrs, "conv", attrs["dilation"]))


def pool_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = _spatial(ins[0], "maxpool")
    _half_kernel(attrs, "maxpool")
    return (c, *_windows(h, w, attrs, "maxpool", ceil=bool(attrs["ceil"])))


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
        return (c, size, size)  # on a smaller map, each output pixel averages the bin it falls in, as PyTorch
    if size != 1:
        raise ShapeError("avgpool takes either a window (`k s p`) or an output `size`, not both",
                         hint="`avgpool k2 s2` pools windows; `avgpool size=7` pools to 7x7")
    for key in ("kernel", "stride"):  # at least 1 for windows; 0 (adaptive, or stride = kernel) is square only
        if 0 in hw(attrs[key]):
            raise ShapeError(f"avgpool {key} {pair_text(attrs[key])} is 0 in one dimension only",
                             hint=f"a window's {key} is at least 1 in each dimension")
    _half_kernel(attrs, "avgpool")
    return (c, *_windows(h, w, attrs, "avgpool", ceil=bool(attrs["ceil"])))


def _and(keys: list[str]) -> str:
    quoted = [f"`{k}`" for k in keys]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def fc_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    return (attrs["out"],)


def same_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    return ins[0]


def equal_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    """An elementwise op of operands of one shape (no broadcasting)."""
    if len(set(ins)) != 1:
        raise ShapeError("operands differ: " + " vs ".join(fmt_shape(s) for s in ins))
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
    """x * y broadcast as numpy does, at one rank: equal shapes, or a per-channel Cx1x1 gate (SE)
    on either side (a branch gating the current value, or an inlined `se` gating its input)."""
    x, y = ins
    if len(x) != len(y) or any(a != b and 1 not in (a, b) for a, b in zip(x, y)):
        raise ShapeError(f"mul needs shapes that equal or broadcast to each other, not {fmt_shape(x)} and "
                         f"{fmt_shape(y)}", hint="a per-channel gate is Cx1x1 with the same C")
    return tuple(max(a, b) for a, b in zip(x, y))


def concat_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    if any(len(s) != 3 for s in ins) or len({s[1:] for s in ins}) != 1:
        raise ShapeError("concat needs feature maps of one resolution, not "
                         + ", ".join(fmt_shape(s) for s in ins), hint="pool or stride the branches alike")
    return (sum(s[0] for s in ins), *ins[0][1:])


def pad_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = ins[0]
    s = attrs["stride"]
    return (c + attrs["pad_before"] + attrs["pad_after"], (h - 1) // s + 1, (w - 1) // s + 1)


def conv_weights(attrs: Attrs, ins: list[Shape], out: Shape) -> list[Weight]:
    weight = Weight("weight", (attrs["out"], ins[0][0] // attrs["groups"], *hw(attrs["kernel"])))
    return [weight, Weight("bias", (attrs["out"],))] if attrs["bias"] else [weight]


def conv_macs(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return prod(out) * (ins[0][0] // attrs["groups"]) * prod(hw(attrs["kernel"]))


def fc_weights(attrs: Attrs, ins: list[Shape], out: Shape) -> list[Weight]:
    return [Weight("weight", (attrs["out"], prod(ins[0]))), Weight("bias", (attrs["out"],))]


def fc_macs(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return prod(ins[0]) * out[0]


def gn_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = _spatial(ins[0], "gn")
    g = attrs["groups"]
    if c % g:
        raise ShapeError(f"gn groups={g} does not divide the channels ({c})",
                         hint="give a group count that divides the channels (`gn 8`); a block given "
                              "`norm=gn` uses the default, 32 (timm's), so its widths must be multiples of 32")
    return (c, h, w)


def affine_weights(attrs: Attrs, ins: list[Shape], out: Shape) -> list[Weight]:
    """A weight and a bias per channel, and no running statistics (nn.GroupNorm)."""
    c = (ins[0][0],)
    return [Weight("weight", c), Weight("bias", c)]


def bn_weights(attrs: Attrs, ins: list[Shape], out: Shape) -> list[Weight]:
    # Only weight and bias are parameters; the running statistics are buffers (as in nn.BatchNorm2d).
    c = (ins[0][0],)
    return [Weight("weight", c), Weight("bias", c), Weight("running_mean", c, BUFFER),
            Weight("running_var", c, BUFFER), Weight("num_batches_tracked", (), COUNTER)]


def eca_kernel(channels: int) -> int:
    """ECA's kernel for `channels` (Wang et al. 2020, eq. 12 with gamma 2, b 1; timm's EcaModule):
    int(|log2(C) + 1| / 2), made odd by adding 1, at least 3. floor((log2 C + 1) / 2) is
    (floor(log2 C) + 1) // 2, so in integers it is C.bit_length() // 2 (odd: `| 1`), which the
    generated PyTorch writes too."""
    return max(channels.bit_length() // 2 | 1, 3)


def channel_kernel(attrs: Attrs, ins: list[Shape]) -> int:
    """A channel_conv's kernel: the one written, or (kernel 0) ECA's for the input's channels."""
    return attrs["kernel"] or eca_kernel(ins[0][0])


def channel_conv_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = _spatial(ins[0], "channel_conv")
    if (h, w) != (1, 1):
        raise ShapeError(f"channel_conv convolves a pooled vector across its channels: it needs Cx1x1, "
                         f"not {fmt_shape(ins[0])}", hint="pool first (`avgpool`), as ECA does")
    if attrs["kernel"] % 2 == 0 and attrs["kernel"]:
        raise ShapeError(f"channel_conv kernel must be odd, not {attrs['kernel']}",
                         hint="an odd kernel, zero-padded by k // 2 at both ends, keeps the channels "
                              "(`channel_conv k5`); leave it out for ECA's size from the channels")
    return (c, 1, 1)


def channel_conv_weights(attrs: Attrs, ins: list[Shape], out: Shape) -> list[Weight]:
    return [Weight("weight", (1, 1, channel_kernel(attrs, ins)))]  # nn.Conv1d(1, 1, k), as timm's


def channel_conv_macs(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return ins[0][0] * channel_kernel(attrs, ins)


def blur_padding(attrs: Attrs) -> int:
    """Each side's reflect padding of a blurpool, timm's get_padding(k, s): ((s - 1) + (k - 1)) // 2."""
    return (attrs["stride"] - 1 + attrs["kernel"] - 1) // 2


def blur_filter(kernel: int) -> list[float]:
    """The 1-D binomial filter a blurpool's k x k filter is the outer square of: C(k-1, i) / 2^(k-1)."""
    return [comb(kernel - 1, i) / 2 ** (kernel - 1) for i in range(kernel)]


def blurpool_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c, h, w = _spatial(ins[0], "blurpool")
    k, s, p = attrs["kernel"], attrs["stride"], blur_padding(attrs)
    if p >= min(h, w):
        raise ShapeError(f"blurpool k{k} s{s} reflect-pads {p} at each side, which needs a map wider than {p}, "
                         f"not {h}x{w}", hint="a reflection cannot reach past the map's edge: use a larger "
                                              "input or a smaller kernel")
    return (c, _window(h, k, s, p, "blurpool"), _window(w, k, s, p, "blurpool"))


def blurpool_macs(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return prod(out) * attrs["kernel"] ** 2  # a depthwise k x k conv with a fixed filter


def _channels_last(shape: Shape, what: str) -> tuple[int, Shape]:
    """The channels a per-pixel op acts on, and the rest: a CxHxW map's pixels, or a flat vector."""
    if len(shape) not in (1, 3):
        raise ShapeError(f"{what} needs a CxHxW map or a vector, not {fmt_shape(shape)}")
    return shape[0], shape[1:]


def ln_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    _channels_last(ins[0], "ln")
    return ins[0]


def linear_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    _, pixels = _channels_last(ins[0], "linear")
    return (attrs["out"], *pixels)


def linear_weights(attrs: Attrs, ins: list[Shape], out: Shape) -> list[Weight]:
    """nn.Linear's: (out, in) and (out,), not a 1x1 conv's (out, in, 1, 1)."""
    return [Weight("weight", (attrs["out"], ins[0][0])), Weight("bias", (attrs["out"],))]


def linear_macs(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return prod(out) * ins[0][0]


def scale_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    c = ins[0][0]
    width, dims = attrs["width"], attrs["dims"]
    if width and width != c:
        raise ShapeError(f"scale has {width} factors, but its input has {c} channels ({fmt_shape(ins[0])})",
                         hint=f"a layer scale has one factor per channel: write `scale {c}`, or leave the "
                              "width out to take the input's")
    if dims not in (1, 3):
        raise ShapeError(f"scale dims must be 1 (a ({c},) parameter, timm's gamma) or 3 (({c}, 1, 1), "
                         f"torchvision's layer_scale), not {dims}", hint="write `scale` or `scale dims=3`")
    if dims == 3 and len(ins[0]) != 3:
        raise ShapeError(f"scale dims=3 is shaped for a CxHxW map, not the vector {fmt_shape(ins[0])}",
                         hint="leave out dims on a vector")
    return ins[0]


def scale_weights(attrs: Attrs, ins: list[Shape], out: Shape) -> list[Weight]:
    """One factor per channel, its state_dict key the layer's label itself (timm's `gamma`,
    torchvision's `layer_scale`: a parameter, not a module's weight)."""
    c = ins[0][0]
    return [Weight("", (c,) if attrs["dims"] == 1 else (c, 1, 1))]
