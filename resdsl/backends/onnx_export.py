"""Graph -> ONNX (opset 17), one converter per op; the batch dimension stays symbolic."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..diagnostics import ResdslError
from ..ir import INPUT, Graph
from ..ops import OPS
from .weights import BN_EPS

OPSET = 17


class _Builder:
    def __init__(self, graph: Graph, weights: dict[str, np.ndarray]) -> None:
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.graph, self.weights = graph, weights
        self.nodes: list = []
        self.initializers: list = []
        # ONNX wants every value named once (SSA): the graph's own input and output names and
        # the weights' state_dict keys are taken first, and a layer whose name collides with one
        # (a layer labelled `input` or `logits`) gets a suffix.
        self.taken: set[str] = {"input", "logits", "features", *weights, *(name for name, _ in graph.outputs)}

    def fresh(self, name: str) -> str:
        candidate, n = name, 0
        while candidate in self.taken:
            n += 1
            candidate = f"{name}_{n}"
        self.taken.add(candidate)
        return candidate

    def const(self, name: str, value: np.ndarray) -> str:
        name = self.fresh(name)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def weight(self, key: str) -> str:
        self.initializers.append(self.numpy_helper.from_array(
            np.ascontiguousarray(self.weights[key].astype(np.float32)), key))
        return key

    def op(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        output = self.fresh(output)
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


def _conv(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    inputs = [ins[0], b.weight(f"{name}.weight")] + ([b.weight(f"{name}.bias")] if a["bias"] else [])
    k, p = a["kernel"], a["padding"]
    return b.op("Conv", inputs, name, kernel_shape=[k, k], strides=[a["stride"]] * 2, pads=[p] * 4,
                dilations=[a["dilation"]] * 2, group=a["groups"])


def _bn(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    keys = ("weight", "bias", "running_mean", "running_var")
    return b.op(
        "BatchNormalization", [ins[0]] + [b.weight(f"{name}.{k}") for k in keys], name, epsilon=BN_EPS
    )


def _maxpool(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    k, p = a["kernel"], a["padding"]
    return b.op("MaxPool", ins, name, kernel_shape=[k, k], strides=[a["stride"]] * 2, pads=[p] * 4,
                ceil_mode=a["ceil"])


def _avgpool(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    if a["kernel"]:
        k, p = a["kernel"], a["padding"]
        return b.op("AveragePool", ins, name, kernel_shape=[k, k], strides=[a["stride"]] * 2, pads=[p] * 4,
                    ceil_mode=a["ceil"], count_include_pad=a["count_pad"])
    if a["size"] == 1:
        return b.op("GlobalAveragePool", ins, name)
    # ONNX has no adaptive pooling: where the size divides the input it is a plain window.
    _, h, w = b.graph.shape(b.graph.inputs(name)[0])
    size = a["size"]
    if h % size or w % size:
        raise ResdslError(f"ONNX cannot express `{name}`: adaptive pooling of {h}x{w} to {size}x{size}, "
                          "which does not divide it", hint="choose an input whose map the size divides")
    return b.op("AveragePool", ins, name, kernel_shape=[h // size, w // size], strides=[h // size, w // size])


def _fc(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    flat = b.op("Flatten", ins, f"{name}.flatten", axis=1)
    return b.op("Gemm", [flat, b.weight(f"{name}.weight"), b.weight(f"{name}.bias")], name, transB=1)


def _add(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    if not a["gated"]:
        return b.op("Add", ins[:2], name)
    residual, shortcut, logits = ins
    t = b.op("Sigmoid", [logits], f"{name}.t")
    carry = b.op("Sub", [b.const(f"{name}.one", np.ones((), np.float32)), t], f"{name}.carry")
    return b.op("Add", [b.op("Mul", [residual, t], f"{name}.transform"),
                        b.op("Mul", [shortcut, carry], f"{name}.keep")], name)


def _pad(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    s = a["stride"]
    sliced = ins[0]
    if s != 1:
        consts = {
            k: b.const(f"{name}.{k}", np.array(v, np.int64))
            for k, v in (("starts", [0, 0]), ("ends", [2**62, 2**62]), ("axes", [2, 3]), ("steps", [s, s]))
        }
        sliced = b.op("Slice", [ins[0], consts["starts"], consts["ends"], consts["axes"], consts["steps"]],
                      f"{name}.subsample")
    pads = b.const(f"{name}.pads", np.array([0, a["pad_before"], 0, 0, 0, a["pad_after"], 0, 0], np.int64))
    return b.op("Pad", [sliced, pads], name)


CONVERTERS: dict[str, Callable[[_Builder, str, list[str], dict], str]] = {
    "conv": _conv,
    "bn": _bn,
    "relu": lambda b, name, ins, a: b.op("Relu", ins, name),
    "leaky_relu": lambda b, name, ins, a: b.op("LeakyRelu", ins, name, alpha=a["slope"]),
    "sigmoid": lambda b, name, ins, a: b.op("Sigmoid", ins, name),
    "softmax": lambda b, name, ins, a: b.op("Softmax", ins, name, axis=1),
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "lrn": lambda b, name, ins, a: b.op("LRN", ins, name, size=a["size"], alpha=a["alpha"], beta=a["beta"],
                                        bias=a["k"]),
    "flatten": lambda b, name, ins, a: b.op("Flatten", ins, name, axis=1),
    "fc": _fc,
    "add": _add,
    "mul": lambda b, name, ins, a: b.op("Mul", ins, name),
    "concat": lambda b, name, ins, a: b.op("Concat", ins, name, axis=1),
    "pad": _pad,
}


def to_onnx(graph: Graph, weights: dict[str, np.ndarray]):
    """An onnx.ModelProto with input `input` (N x C x H x W) and one output: `logits`
    (N x classes), or `features` (N x C x H x W) for a network that ends in a feature map, or
    one output per name of the spec's `outputs`."""
    from onnx import TensorProto, checker, helper
    b = _Builder(graph, weights)
    values = {INPUT: "input"}
    for name in graph.order():
        node = graph.node(name)
        if OPS[node["op"]].train_only:  # dropout, drop-path: the identity at inference
            values[name] = values[graph.inputs(name)[0]]
        elif node["op"] != "input":
            values[name] = CONVERTERS[node["op"]](
                b, name, [values[i] for i in graph.inputs(name)], node["attrs"]
            )
    outputs = []
    for name, node in graph.results():
        b.nodes.append(b.helper.make_node("Identity", [values[node]], [name], name=name))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *graph.shape(node)]))
    c, h, w = graph.shape(INPUT)
    onnx_graph = helper.make_graph(
        b.nodes, graph.name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w])],
        outputs, initializer=b.initializers)
    model = helper.make_model(onnx_graph, producer_name="resdsl",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every ONNX Runtime that supports opset 17
    checker.check_model(model, full_check=True)
    return model
