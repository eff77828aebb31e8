"""Graph -> Relax IRModule, directly (no frontend), one converter per op.

It lowers a copy of the graph legalized for inference: decomposed (`passes/decompose.py`: a
highway gate is sigmoid, sub, mul and add; an fc reads a flatten) and each BN that follows a
conv folded into it (`passes/fold_bn.py`; the weights by `fold_weights`); a BN with no conv
before it becomes a per-channel multiply-add. Weights are embedded as constants, so the
compiled library needs only the input. The batch dimension is symbolic unless a batch is given:
tuned kernels are specialised to the batch they were tuned at, so a tuned build fixes it.

Layouts: `NCHW` (PyTorch's, what the library's input always is) or `NHWC`, where channels are
innermost and a tuned CPU conv can vectorise over them: ResNet's late stages have 7x7 maps, too
narrow for vectors along W. Under NHWC the input is transposed once on entry and weights are
stored HWIO; the logits are layout-free.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..backends.support import check_supported
from ..ir import INPUT, Graph
from ..ops import OPS
from ..ops.rules import blur_filter, blur_padding
from ..ops.schema import hw
from ..passes.decompose import Decompose, on_a_copy
from ..passes.fold_bn import FoldBatchNorm, bn_scale_shift, fold_weights
from . import bf16, winograd

LAYOUTS = ("NCHW", "NHWC")


class _Ctx:
    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], batch, layout: str,
                 winograd: bool, wide_winograd: bool, precision: str = "fp32") -> None:
        from tvm import relax
        self.relax, self.graph, self.weights, self.batch, self.layout = relax, graph, weights, batch, layout
        self.winograd, self.wide_winograd, self.precision = winograd, wide_winograd, precision
        # Flattens whose rows stay in NHWC's (H, W, C) order: each fc reading one reorders its
        # weight's columns instead, at compile time (flatten -> its input's (C, H, W)).
        self.hwc_rows: dict[str, tuple[int, int, int]] = {}
        self.results = {node for _, node in graph.results()}  # these leave in PyTorch's layout
        self.channel_axis = layout.index("C")
        self.spatial_axes = [layout.index("H"), layout.index("W")]

    def const(self, value: np.ndarray):
        return self.relax.const(np.ascontiguousarray(value.astype(np.float32)))

    def channel(self, value: np.ndarray):
        shape = [1, 1, 1, 1]
        shape[self.channel_axis] = -1
        return self.const(value.reshape(shape))

    def kernel(self, oihw: np.ndarray):
        return self.const(oihw if self.layout == "NCHW" else oihw.transpose(2, 3, 1, 0))  # HWIO

    def pad_width(self, channel: tuple[int, int]) -> list[int]:
        """relax.op.nn.pad widths: zero everywhere but the channel axis."""
        widths = [0] * 8
        widths[2 * self.channel_axis:2 * self.channel_axis + 2] = channel
        return widths


def _pads(a: dict) -> tuple[int, int, int, int]:
    """A window's padding as Relax takes it: (top, left, bottom, right)."""
    return hw(a["padding"]) * 2


def _conv(c: _Ctx, bb, name: str, ins: list, a: dict):
    op = c.relax.op
    weight = c.weights[f"{name}.weight"]
    bias = c.weights.get(f"{name}.bias", np.zeros(weight.shape[0], np.float32)) if a["bias"] else None
    p = _pads(a)
    tile = winograd.tile_for(a, weight.shape, c.wide_winograd) if c.winograd else None
    if tile is not None:
        out = bb.emit_te(winograd.conv2d_nhwc, ins[0], c.const(winograd.transform_weight(weight, tile)), p[0],
                         primfunc_name_hint="conv2d_winograd")
        return out if bias is None else bb.emit(op.add(out, c.channel(bias)))
    if c.precision == "bf16" and bf16.packs(bf16.paired(weight).shape, a["groups"]):
        # The cast is an op of its own so that it fuses into the kernel that made the activation,
        # which then writes it in bf16: half the bytes for this conv to read.
        low = bb.emit(op.astype(ins[0], "bfloat16"))
        if weight.shape[1] % 2:  # the RGB stem: a zero channel makes the last pair
            low = bb.emit(op.nn.pad(low, c.pad_width((0, 1))))
            weight = bf16.paired(weight)
        out = bb.emit_te(bf16.conv2d_nhwc, low, c.relax.const(bf16.pack_weight(weight)), hw(a["stride"]), p,
                         hw(a["dilation"]), primfunc_name_hint="conv2d_bf16")
        return out if bias is None else bb.emit(op.add(out, c.channel(bias)))
    out = bb.emit(op.nn.conv2d(ins[0], c.kernel(weight), strides=hw(a["stride"]), padding=p,
                               dilation=a["dilation"], groups=a["groups"], data_layout=c.layout,
                               kernel_layout="OIHW" if c.layout == "NCHW" else "HWIO"))
    return out if bias is None else bb.emit(op.add(out, c.channel(bias)))


def _bn(c: _Ctx, bb, name: str, ins: list, a: dict):
    scale, shift = bn_scale_shift(c.weights, name, a["eps"])
    op = c.relax.op
    return bb.emit(op.add(op.multiply(ins[0], c.channel(scale)), c.channel(shift)))


def _gn(c: _Ctx, bb, name: str, ins: list, a: dict):
    """nn.GroupNorm: each sample's channel groups normalised over the group's channels and the map."""
    gamma, beta = (c.const(c.weights[f"{name}.{key}"]) for key in ("weight", "bias"))
    return bb.emit(c.relax.op.nn.group_norm(ins[0], gamma, beta, a["groups"], c.channel_axis, c.spatial_axes,
                                            epsilon=a["eps"]))


def _axis(c: _Ctx, name: str) -> int:
    """The channel axis of a node's input: the layout's on a map, 1 on a vector."""
    return c.channel_axis if len(c.graph.shape(c.graph.inputs(name)[0])) == 3 else 1


def _ln(c: _Ctx, bb, name: str, ins: list, a: dict):
    """LayerNorm over the channel axis alone, in either layout: no transposes."""
    gamma, beta = (c.const(c.weights[f"{name}.{key}"]) for key in ("weight", "bias"))
    return bb.emit(c.relax.op.nn.layer_norm(ins[0], gamma, beta, axes=[_axis(c, name)], epsilon=a["eps"]))


def _linear(c: _Ctx, bb, name: str, ins: list, a: dict):
    """On a map, a 1x1 conv (nn.Linear's (out, in) weight as (out, in, 1, 1)); on a vector, a matmul."""
    op = c.relax.op
    weight, bias = c.weights[f"{name}.weight"], c.weights[f"{name}.bias"]
    if len(c.graph.shape(name)) == 1:
        return bb.emit(op.add(op.matmul(ins[0], c.const(weight.T)), c.const(bias)))
    out = bb.emit(op.nn.conv2d(ins[0], c.kernel(weight[:, :, None, None]), data_layout=c.layout,
                               kernel_layout="OIHW" if c.layout == "NCHW" else "HWIO"))
    return bb.emit(op.add(out, c.channel(bias)))


def _scale(c: _Ctx, bb, name: str, ins: list, a: dict):
    factor = c.weights[name].reshape(-1)
    spatial = len(c.graph.shape(name)) == 3
    return bb.emit(c.relax.op.multiply(ins[0], c.channel(factor) if spatial else c.const(factor)))


def _channel_conv(c: _Ctx, bb, name: str, ins: list, a: dict):
    """The Cx1x1 vector as a 1-D sequence of C (N, 1, C), convolved, and back (one memory order
    in either layout: the map is 1x1)."""
    op = c.relax.op
    weight = c.weights[f"{name}.weight"]
    channels, k = c.graph.shape(name)[0], weight.shape[-1]
    seq = bb.emit(op.reshape(ins[0], (c.batch, 1, channels)))
    out = bb.emit(op.nn.conv1d(seq, c.const(weight), padding=(k // 2, k // 2)))
    shape = [c.batch, 1, 1, 1]
    shape[c.channel_axis] = channels
    return bb.emit(op.reshape(out, shape))


def _blurpool(c: _Ctx, bb, name: str, ins: list, a: dict):
    """A reflect pad, then a depthwise conv whose weight is the fixed binomial filter."""
    op = c.relax.op
    channels, k, p = c.graph.shape(name)[0], a["kernel"], blur_padding(a)
    widths = [0] * 8
    for axis in c.spatial_axes:
        widths[2 * axis:2 * axis + 2] = [p, p]
    padded = bb.emit(op.nn.pad(ins[0], widths, pad_mode="reflect"))
    row = np.array(blur_filter(k), np.float32)
    weight = c.kernel(np.broadcast_to(np.outer(row, row), (channels, 1, k, k)))
    return bb.emit(op.nn.conv2d(padded, weight, strides=a["stride"], groups=channels, data_layout=c.layout,
                                kernel_layout="OIHW" if c.layout == "NCHW" else "HWIO"))


def _channels(c: _Ctx, bb, x, start: int, width: int):
    """The channels [start, start + width) of `x`, on the layout's channel axis."""
    return bb.emit(c.relax.op.strided_slice(x, axes=[c.channel_axis], begin=[start], end=[start + width]))


def _chunk(c: _Ctx, bb, name: str, ins: list, a: dict):
    width = c.graph.shape(name)[0]
    return _channels(c, bb, ins[0], a["index"] * width, width)


def _shuffle(c: _Ctx, bb, name: str, ins: list, a: dict):
    """The channel axis split in (groups, C / groups), the two swapped, merged back: in NHWC the
    channels are innermost, so the split is at the end."""
    op, g = c.relax.op, a["groups"]
    channels, *spatial = shape = c.graph.shape(name)
    axis = _axis(c, name)
    dims = [c.batch, *shape] if axis == 1 else [c.batch, *spatial, channels]
    split = dims[:axis] + [g, channels // g] + dims[axis + 1:]
    order = list(range(len(split)))
    order[axis], order[axis + 1] = axis + 1, axis
    return bb.emit(op.reshape(op.permute_dims(op.reshape(ins[0], split), order), dims))


def _select(c: _Ctx, bb, name: str, ins: list, a: dict):
    """The logits as (N, P, C) (one memory order in either layout: the map is 1x1), a softmax
    over P, back; each branch times its C channels of the weights, summed."""
    op = c.relax.op
    *branches, logits = ins
    p, channels = len(branches), c.graph.shape(name)[0]
    weights = bb.emit(op.nn.softmax(bb.emit(op.reshape(logits, (c.batch, p, channels))), axis=1))
    shape = [c.batch, 1, 1, 1]
    shape[c.channel_axis] = p * channels
    weights = bb.emit(op.reshape(weights, shape))
    out = None
    for i, branch in enumerate(branches):
        weighted = bb.emit(op.multiply(branch, _channels(c, bb, weights, i * channels, channels)))
        out = weighted if out is None else bb.emit(op.add(out, weighted))
    return out


def _maxpool(c: _Ctx, bb, name: str, ins: list, a: dict):
    return bb.emit(c.relax.op.nn.max_pool2d(ins[0], pool_size=hw(a["kernel"]), strides=hw(a["stride"]),
                                            padding=_pads(a), ceil_mode=bool(a["ceil"]), layout=c.layout))


def _avgpool(c: _Ctx, bb, name: str, ins: list, a: dict):
    nn = c.relax.op.nn
    if a["kernel"]:
        return bb.emit(nn.avg_pool2d(ins[0], pool_size=hw(a["kernel"]), strides=hw(a["stride"]), padding=_pads(a),
                                     ceil_mode=bool(a["ceil"]), count_include_pad=bool(a["count_pad"]),
                                     layout=c.layout))
    if a["size"] == 1:
        return bb.emit(c.relax.op.mean(ins[0], axis=c.spatial_axes, keepdims=True))
    return bb.emit(nn.adaptive_avg_pool2d(ins[0], output_size=(a["size"], a["size"]), layout=c.layout))


def _lrn(c: _Ctx, bb, name: str, ins: list, a: dict):
    """x / (k + alpha * mean of x^2 over `size` neighbouring channels)^beta, as nn.LocalResponseNorm:
    the channel axis made the height of a 2-D average pool, zero padding counted."""
    op, x = c.relax.op, ins[0]
    ch, h, w = c.graph.shape(c.graph.inputs(name)[0])
    size = a["size"]
    squared = bb.emit(op.multiply(x, x))
    stacked = (c.batch, 1, ch, h * w) if c.layout == "NCHW" else (c.batch, h * w, ch, 1)
    mean = bb.emit(op.nn.avg_pool2d(bb.emit(op.reshape(squared, stacked)), pool_size=(size, 1),
                                    padding=(size // 2, 0, (size - 1) // 2, 0), count_include_pad=True,
                                    layout="NCHW"))
    mean = bb.emit(op.reshape(mean, (c.batch, ch, h, w) if c.layout == "NCHW" else (c.batch, h, w, ch)))
    base = bb.emit(op.add(c.const(np.array(a["k"])), op.multiply(c.const(np.array(a["alpha"])), mean)))
    return bb.emit(op.divide(x, bb.emit(op.power(base, c.const(np.array(a["beta"]))))))


def _flatten(c: _Ctx, bb, name: str, ins: list, a: dict):
    x, g = ins[0], c.graph
    in_shape = g.shape(g.inputs(name)[0])
    if c.layout == "NHWC" and len(in_shape) == 3:
        users = g.users(name)
        if users and all(g.node(u).op == "fc" for u in users) and name not in c.results:
            c.hwc_rows[name] = in_shape  # the fcs take the (H, W, C) order; no transpose
        else:
            x = bb.emit(c.relax.op.permute_dims(x, [0, 3, 1, 2]))  # PyTorch flattens (C, H, W)
    return bb.emit(c.relax.op.reshape(x, (c.batch, -1)))


def _softmax(c: _Ctx, bb, name: str, ins: list, a: dict):
    spatial = len(c.graph.shape(c.graph.inputs(name)[0])) == 3
    return bb.emit(c.relax.op.nn.softmax(ins[0], axis=c.channel_axis if spatial else 1))


def _fc(c: _Ctx, bb, name: str, ins: list, a: dict):
    """On a vector: decomposition put a flatten before every fc that reads a map."""
    op = c.relax.op
    weight = c.weights[f"{name}.weight"]
    source = c.graph.inputs(name)[0]
    if source in c.hwc_rows:
        # Its columns follow PyTorch's (C, H, W) flattening; reorder them to (H, W, C).
        ch, h, w = c.hwc_rows[source]
        weight = weight.reshape(-1, ch, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
    weight_t = c.const(weight.T)
    return bb.emit(op.add(op.matmul(ins[0], weight_t), c.const(c.weights[f"{name}.bias"])))


def _hardsigmoid(c: _Ctx, bb, name: str, ins: list, a: dict):
    """relu6(x + 3) / 6, as nn.Hardsigmoid (Relax has no op of its own for it)."""
    op = c.relax.op
    return bb.emit(op.divide(op.clip(op.add(ins[0], c.const(np.array(3.0))), 0.0, 6.0), c.const(np.array(6.0))))


def _hardswish(c: _Ctx, bb, name: str, ins: list, a: dict):
    """x * relu6(x + 3) / 6, as nn.Hardswish."""
    return bb.emit(c.relax.op.multiply(ins[0], _hardsigmoid(c, bb, name, ins, a)))


def _pad(c: _Ctx, bb, name: str, ins: list, a: dict):
    op = c.relax.op
    x, s = ins[0], a["stride"]
    if s != 1:
        _, h, w = c.graph.shape(c.graph.inputs(name)[0])
        x = bb.emit(op.strided_slice(x, axes=c.spatial_axes, begin=[0, 0], end=[h, w], strides=[s, s]))
    return bb.emit(op.nn.pad(x, c.pad_width((a["pad_before"], a["pad_after"]))))


CONVERTERS: dict[str, Callable] = {
    "conv": _conv,
    "bn": _bn,
    "gn": _gn,
    "ln": _ln,
    "linear": _linear,
    "scale": _scale,
    "channel_conv": _channel_conv,
    "blurpool": _blurpool,
    "relu": lambda c, bb, name, ins, a: bb.emit(c.relax.op.nn.relu(ins[0])),
    "leaky_relu": lambda c, bb, name, ins, a: bb.emit(c.relax.op.nn.leakyrelu(ins[0], alpha=a["slope"])),
    "sigmoid": lambda c, bb, name, ins, a: bb.emit(c.relax.op.sigmoid(ins[0])),
    "relu6": lambda c, bb, name, ins, a: bb.emit(c.relax.op.nn.relu6(ins[0])),
    "silu": lambda c, bb, name, ins, a: bb.emit(c.relax.op.nn.silu(ins[0])),
    "gelu": lambda c, bb, name, ins, a: bb.emit(c.relax.op.nn.gelu(ins[0])),  # the erf form
    "hardsigmoid": _hardsigmoid,
    "hardswish": _hardswish,
    "softmax": _softmax,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "lrn": _lrn,
    "flatten": _flatten,
    "fc": _fc,
    "add": lambda c, bb, name, ins, a: bb.emit(c.relax.op.add(ins[0], ins[1])),  # decomposed: never gated
    "sub": lambda c, bb, name, ins, a: bb.emit(c.relax.op.subtract(ins[0], ins[1])),
    "mul": lambda c, bb, name, ins, a: bb.emit(c.relax.op.multiply(ins[0], ins[1])),
    "concat": lambda c, bb, name, ins, a: bb.emit(c.relax.op.concat(ins, axis=c.channel_axis)),
    "select": _select,
    "chunk": _chunk,
    "shuffle": _shuffle,
    "pad": _pad,
}


def check(graph: Graph) -> None:
    """Refuse, located and all at once, every op of `graph` this frontend has no converter for
    (before any weights are made for it)."""
    check_supported(graph, "relax", CONVERTERS, inference=True)


def to_relax(graph: Graph, weights: dict[str, np.ndarray], batch: int | None = 1, layout: str = "NCHW",
             winograd: bool = False, wide_winograd: bool = False, precision: str = "fp32"):
    """An IRModule whose `main(input)` (always NCHW) returns the logits; `batch` None: any batch.

    `winograd`: 3x3 stride-1 convs of up to 128x128 channels as Winograd F(4x4, 3x3) kernels
    (needs NHWC); `wide_winograd`: those of up to 256x256 too, as F(2x2, 3x3); `precision` "bf16":
    the other convs whose channels pack in (16, 2) tiles multiply in bf16 (needs NHWC).
    """
    graph = on_a_copy(graph, [Decompose(), FoldBatchNorm()])
    weights = fold_weights(graph, weights)
    check(graph)
    from tvm import relax
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if (winograd or precision == "bf16") and layout != "NHWC":
        raise ValueError("winograd and bf16 convolutions need the NHWC layout")
    from tvm import tirx
    n = tirx.Var("batch", "int64")
    ctx = _Ctx(graph, weights, n if batch is None else batch, layout, winograd, wide_winograd, precision)
    bb = relax.BlockBuilder()
    x = relax.Var("input", relax.TensorType((n, *graph.shape(INPUT)), "float32"))
    with bb.function("main", [x]):
        if batch is not None:
            # Kernels specialised to one batch (as tuned ones are): a call with another batch is
            # told which one the library takes, before any shape check fails less clearly.
            bb.emit(relax.op.assert_op(
                relax.prim_value(tirx.EQ(n, tirx.IntImm("int64", batch))), [relax.prim_value(n)],
                format=f"this library was built for batch {batch}, not {{}}: build it for that batch, "
                       "or untuned for any batch"))
        with bb.dataflow():
            if batch is not None:
                x = bb.match_cast(x, relax.TensorType((batch, *graph.shape(INPUT)), "float32"))
            values = {INPUT: x if layout == "NCHW" else bb.emit(relax.op.permute_dims(x, [0, 2, 3, 1]))}
            for name in graph.order():
                node = graph.node(name)
                if OPS[node.op].train_only:  # dropout, drop-path: the identity at inference
                    values[name] = values[graph.inputs(name)[0]]
                elif node.op != "input":
                    values[name] = CONVERTERS[node.op](
                        ctx, bb, name, [values[i] for i in graph.inputs(name)], node.attrs
                    )
            results = []
            for _, node in graph.results():  # feature maps leave in PyTorch's NCHW, as the input came
                value = values[node]
                if layout == "NHWC" and len(graph.shape(node)) == 3:
                    value = bb.emit(relax.op.permute_dims(value, [0, 3, 1, 2]))
                results.append(value)
            out = bb.emit_output(results[0] if len(results) == 1 else relax.Tuple(results))
        bb.emit_func_output(out)
    return bb.get()
