"""Graph -> Relax IRModule, directly (no frontend), one converter per op.

For inference, BN folds into the conv before it (scale into the weights, shift into a bias);
a BN with no conv before it becomes a per-channel multiply-add. Weights are embedded as
constants, so the compiled library needs only the input. The batch size is fixed at build
time, as tuned kernels are specialised to it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir import INPUT, Graph
from .weights import bn_scale_shift


class _Ctx:
    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], batch: int) -> None:
        from tvm import relax
        self.relax, self.graph, self.weights, self.batch = relax, graph, weights, batch
        self.folded = _foldable_bns(graph)  # bn -> the conv it folds into
        self.fold_into = {conv: bn for bn, conv in self.folded.items()}

    def const(self, value: np.ndarray):
        return self.relax.const(np.ascontiguousarray(value.astype(np.float32)))

    def channel(self, value: np.ndarray):
        return self.const(value.reshape(1, -1, 1, 1))


def _foldable_bns(graph: Graph) -> dict[str, str]:
    folded = {}
    for bn in graph.nodes_of("bn"):
        (src,) = graph.inputs(bn)
        if graph.node(src)["op"] == "conv" and graph.users(src) == [bn]:
            folded[bn] = src
    return folded


def _conv(c: _Ctx, bb, name: str, ins: list, a: dict):
    op = c.relax.op
    weight = c.weights[f"{name}.weight"]
    bias = c.weights.get(f"{name}.bias", np.zeros(weight.shape[0], np.float32)) if a["bias"] else None
    if name in c.fold_into:
        scale, shift = bn_scale_shift(c.weights, c.fold_into[name])
        weight = weight * scale.reshape(-1, 1, 1, 1)
        bias = shift if bias is None else bias * scale + shift
    p = a["padding"]
    out = bb.emit(op.nn.conv2d(ins[0], c.const(weight), strides=a["stride"], padding=(p, p, p, p),
                               groups=a["groups"]))
    return out if bias is None else bb.emit(op.add(out, c.channel(bias)))


def _bn(c: _Ctx, bb, name: str, ins: list, a: dict):
    if name in c.folded:
        return ins[0]
    scale, shift = bn_scale_shift(c.weights, name)
    op = c.relax.op
    return bb.emit(op.add(op.multiply(ins[0], c.channel(scale)), c.channel(shift)))


def _maxpool(c: _Ctx, bb, name: str, ins: list, a: dict):
    p = a["padding"]
    return bb.emit(c.relax.op.nn.max_pool2d(ins[0], pool_size=a["kernel"], strides=a["stride"],
                                            padding=(p, p, p, p)))


def _fc(c: _Ctx, bb, name: str, ins: list, a: dict):
    op = c.relax.op
    flat = bb.emit(op.reshape(ins[0], (c.batch, -1)))
    weight_t = c.const(c.weights[f"{name}.weight"].T)
    return bb.emit(op.add(op.matmul(flat, weight_t), c.const(c.weights[f"{name}.bias"])))


def _add(c: _Ctx, bb, name: str, ins: list, a: dict):
    op = c.relax.op
    if not a["gated"]:
        return bb.emit(op.add(ins[0], ins[1]))
    residual, shortcut, logits = ins
    t = bb.emit(op.sigmoid(logits))
    # T*F + (1-T)*x == x + T*(F - x): one multiply fewer.
    return bb.emit(op.add(shortcut, op.multiply(t, op.subtract(residual, shortcut))))


def _pad(c: _Ctx, bb, name: str, ins: list, a: dict):
    op = c.relax.op
    x, s = ins[0], a["stride"]
    if s != 1:
        _, h, w = c.graph.shape(c.graph.inputs(name)[0])
        x = bb.emit(op.strided_slice(x, axes=[2, 3], begin=[0, 0], end=[h, w], strides=[s, s]))
    return bb.emit(op.nn.pad(x, [0, 0, a["pad_before"], a["pad_after"], 0, 0, 0, 0]))


CONVERTERS: dict[str, Callable] = {
    "conv": _conv,
    "bn": _bn,
    "relu": lambda c, bb, name, ins, a: bb.emit(c.relax.op.nn.relu(ins[0])),
    "maxpool": _maxpool,
    "avgpool": lambda c, bb, name, ins, a: bb.emit(c.relax.op.mean(ins[0], axis=[2, 3], keepdims=True)),
    "fc": _fc,
    "add": _add,
    "pad": _pad,
}


def to_relax(graph: Graph, weights: dict[str, np.ndarray], batch: int = 1):
    """An IRModule whose `main(input)` returns the logits."""
    from tvm import relax
    missing = sorted({graph.node(n)["op"] for n in graph.order()} - set(CONVERTERS) - {"input"})
    if missing:  # found before lowering starts, all at once
        raise NotImplementedError(f"the Relax backend has no converter for: {', '.join(missing)}")
    ctx = _Ctx(graph, weights, batch)
    bb = relax.BlockBuilder()
    x = relax.Var("input", relax.TensorType((batch, *graph.shape(INPUT)), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            values = {INPUT: x}
            for name in graph.order():
                node = graph.node(name)
                if node["op"] != "input":
                    values[name] = CONVERTERS[node["op"]](ctx, bb, name, [values[i] for i in graph.inputs(name)],
                                                          node["attrs"])
            out = bb.emit_output(values[graph.output])
        bb.emit_func_output(out)
    return bb.get()
