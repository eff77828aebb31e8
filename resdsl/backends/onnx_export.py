"""Graph -> ONNX (opset 17 by default, up to the newest the installed ONNX Runtime runs), one
converter per op, of a decomposed copy of the graph (`passes/decompose.py`: a highway gate is
Sigmoid, Sub, Mul and Add; an fc on a map reads a Flatten). The batch dimension stays symbolic,
every intermediate tensor carries its shape (`value_info`) from resdsl's own inference, and the
model says where it came from (metadata). BatchNormalization stays: ONNX Runtime folds it."""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..diagnostics import ResdslError
from ..ir import INPUT, Graph
from ..naming import Namespace
from ..ops import OPS
from ..ops.rules import blur_filter, blur_padding, channel_kernel
from ..ops.schema import hw
from ..passes.decompose import decomposed
from . import onnx_channels, onnx_pools
from .support import check_supported

OPSET = 17  # the default, and the oldest offered: the first with every op below in its current form
BATCH = "N"  # the symbolic batch dimension of the input, the outputs and every value_info


@functools.cache
def max_opset() -> int:
    """The newest opset both onnx (to build and check it) and onnxruntime (to run it) know.
    ONNX Runtime declares no such number, so a one-node model is offered at each opset, newest
    first: its loader refuses opsets newer than those it was built with."""
    import onnx
    newest = onnx.defs.onnx_opset_version()
    try:
        import onnxruntime as ort
    except ImportError:  # nothing to run it: what onnx can check is all there is to go by
        return newest
    return next((opset for opset in range(newest, OPSET, -1) if _runs(ort, opset)), OPSET)


def _runs(ort, opset: int) -> bool:
    from onnx import TensorProto, helper
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the refusals are expected; they are not the user's errors
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy")
    probe = _model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y]), opset)
    try:
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - ORT's refusal of an opset is an untyped Fail
        return False
    return True


def check_opset(opset: int) -> None:
    newest = max_opset()
    if not OPSET <= opset <= newest:
        raise ResdslError(f"opset {opset} is out of range: resdsl exports opsets {OPSET} to {newest}",
                          hint=f"{newest} is the newest {_limit()}; "
                               f"{OPSET}, the default, runs on every ONNX Runtime resdsl supports")


def _limit() -> str:
    try:
        import onnxruntime
        return f"this ONNX Runtime ({onnxruntime.__version__}) runs"
    except ImportError:
        import onnx
        return f"onnx {onnx.__version__} knows (ONNX Runtime, which would run it, is not installed)"


def _model(graph, opset: int):
    from onnx import helper
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    # The oldest IR version that can carry the opset, so that the file loads in the oldest
    # runtimes that run it (8 for opset 17).
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model


def spec_metadata(spec: str | Path, text: bytes | str | None = None,
                  overrides: dict[str, str] | None = None, includes: Sequence[str | Path] = ()) -> dict[str, str]:
    """The metadata that names a spec: its file name (not its path, so that the same spec
    exports the same bytes from any directory), the sha256 of its bytes (what `sha256sum`
    prints), and what else decides the network without being in that text: the files it
    includes, each with its sha256, and any `--set` overrides."""
    spec = Path(spec)
    if text is None:
        text = spec.read_bytes()
    data = text.encode() if isinstance(text, str) else text
    meta = {"resdsl.spec": spec.name, "resdsl.spec_sha256": hashlib.sha256(data).hexdigest()}
    if includes:
        home = spec.resolve().parent
        def name(p: Path) -> str:
            p = p.resolve()
            return p.relative_to(home).as_posix() if p.is_relative_to(home) else p.name
        meta["resdsl.includes"] = ",".join(
            f"{name(Path(p))}={hashlib.sha256(Path(p).read_bytes()).hexdigest()}" for p in includes)
    if overrides:
        meta["resdsl.overrides"] = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return meta


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("resdsl")
    except PackageNotFoundError:  # run from a checkout that was never installed
        from .. import __version__
        return __version__


class _Builder:
    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], opset: int = OPSET) -> None:
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.graph, self.weights, self.opset = graph, weights, opset
        self.nodes: list = []
        self.initializers: list = []
        self.shapes: dict[str, tuple[int, ...]] = {}  # value -> its shape less the batch dim
        # ONNX wants every value named once (SSA): the graph's own input and output names and
        # the weights' state_dict keys are taken first, and a layer whose name collides with one
        # (a layer labelled `input` or `logits`) gets the one suffix rule's `_1` (naming.py).
        self.names = Namespace(taken={"input", "logits", "features", *weights,
                                      *(name for name, _ in graph.outputs)})

    def fresh(self, name: str) -> str:
        return self.names.create_name(name)

    def const(self, name: str, value: np.ndarray) -> str:
        name = self.fresh(name)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def weight(self, key: str) -> str:
        self.initializers.append(self.numpy_helper.from_array(
            np.ascontiguousarray(self.weights[key].astype(np.float32)), key))
        return key

    def op(self, op_type: str, inputs: list[str], output: str, shape: tuple[int, ...] | None = None,
           **attrs) -> str:
        """A node; `shape` is given for the values a converter makes on the way to a layer's
        output (which to_onnx gives the layer's shape), as the graph knows no name for them."""
        output = self.fresh(output)
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=output, **attrs))
        if shape is not None:
            self.shapes[output] = tuple(shape)
        return output

    def in_shape(self, name: str, i: int = 0) -> tuple[int, ...]:
        return self.graph.shape(self.graph.inputs(name)[i])

    def scalar(self, name: str, value: float) -> str:
        """A float32 0-d constant, broadcast by the node that reads it."""
        return self.const(name, np.array(value, np.float32))


def _conv(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    inputs = [ins[0], b.weight(f"{name}.weight")] + ([b.weight(f"{name}.bias")] if a["bias"] else [])
    return b.op("Conv", inputs, name, **_window(a), dilations=[a["dilation"]] * 2, group=a["groups"])


def _window(a: dict) -> dict:
    """A window's ONNX attributes, each (height, width); pads (top, left, bottom, right)."""
    return {"kernel_shape": list(hw(a["kernel"])), "strides": list(hw(a["stride"])), "pads": list(hw(a["padding"])) * 2}


def _bn(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    keys = ("weight", "bias", "running_mean", "running_var")
    return b.op(
        "BatchNormalization", [ins[0]] + [b.weight(f"{name}.{k}") for k in keys], name, epsilon=a["eps"]
    )


GROUP_NORM_OPSET = 21  # the first GroupNormalization with a scale and bias per channel (18's are per group)


def _gn(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    g = a["groups"]
    if b.opset >= GROUP_NORM_OPSET:
        return b.op("GroupNormalization", [ins[0], b.weight(f"{name}.weight"), b.weight(f"{name}.bias")], name,
                    epsilon=a["eps"], num_groups=g)
    # As torch.onnx writes it: each group one instance of (N, G, C/G*H*W), normalised without an
    # affine (scale 1, bias 0 per group), then the per-channel affine, its weights made Cx1x1 here.
    c, h, w = shape = b.in_shape(name)
    grouped = b.op("Reshape", [ins[0], b.const(f"{name}.groups", np.array([0, g, -1], np.int64))],
                   f"{name}.grouped", shape=(g, c // g * h * w))
    normed = b.op("InstanceNormalization", [grouped, b.const(f"{name}.ones", np.ones(g, np.float32)),
                                            b.const(f"{name}.zeros", np.zeros(g, np.float32))],
                  f"{name}.normed", shape=(g, c // g * h * w), epsilon=a["eps"])
    back = b.op("Reshape", [normed, b.const(f"{name}.shape", np.array([0, c, h, w], np.int64))],
                f"{name}.map", shape=shape)
    scale, shift = (b.const(f"{name}.{key}", b.weights[f"{name}.{key}"].astype(np.float32).reshape(c, 1, 1))
                    for key in ("weight", "bias"))
    return b.op("Add", [b.op("Mul", [back, scale], f"{name}.scaled", shape=shape), shift], name)


def _channel_conv(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    """The Cx1x1 vector as a 1-D sequence of C (N, 1, C), its weight's 1x1xk Conv, and back."""
    c = b.in_shape(name)[0]
    k = channel_kernel(a, [b.in_shape(name)])
    seq = b.op("Reshape", [ins[0], b.const(f"{name}.seq", np.array([0, 1, -1], np.int64))], f"{name}.in",
               shape=(1, c))
    out = b.op("Conv", [seq, b.weight(f"{name}.weight")], f"{name}.out", shape=(1, c), kernel_shape=[k],
               pads=[k // 2] * 2)
    return b.op("Reshape", [out, b.const(f"{name}.map", np.array([0, -1, 1, 1], np.int64))], name)


def _blurpool(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    """A reflect Pad, then a depthwise Conv whose weight is the fixed binomial filter (a constant)."""
    (c, h, w), k, p = b.in_shape(name), a["kernel"], blur_padding(a)
    pads = b.const(f"{name}.pads", np.array([0, 0, p, p, 0, 0, p, p], np.int64))
    padded = b.op("Pad", [ins[0], pads], f"{name}.padded", shape=(c, h + 2 * p, w + 2 * p), mode="reflect")
    row = np.array(blur_filter(k), np.float32)
    weight = b.const(f"{name}.filter", np.broadcast_to(np.outer(row, row), (c, 1, k, k)))
    return b.op("Conv", [padded, weight], name, kernel_shape=[k, k], strides=[a["stride"]] * 2, group=c)


def _channels(b: _Builder, name: str, x: str, start: int, width: int, shape: tuple[int, ...]) -> str:
    """The channels [start, start + width) of `x`, a Slice on axis 1."""
    consts = [b.const(f"{name}.{key}", np.array([value], np.int64))
              for key, value in (("starts", start), ("ends", start + width), ("axes", 1))]
    return b.op("Slice", [x, *consts], name, shape=shape)


def _chunk(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    c, *rest = b.in_shape(name)
    width = c // a["n"]
    return _channels(b, name, ins[0], a["index"] * width, width, (width, *rest))


def _select(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    """The logits (N, P*C, 1, 1) as (N, P, C), a Softmax over P, back to (N, P*C, 1, 1); each
    branch times its C channels of the weights, summed."""
    *branches, logits = ins
    p, (c, h, w) = len(branches), b.graph.shape(name)
    grouped = b.op("Reshape", [logits, b.const(f"{name}.paths", np.array([0, p, c], np.int64))],
                   f"{name}.logits", shape=(p, c))
    softmax = b.op("Softmax", [grouped], f"{name}.softmax", shape=(p, c), axis=1)
    weights = b.op("Reshape", [softmax, b.const(f"{name}.map", np.array([0, p * c, 1, 1], np.int64))],
                   f"{name}.weights", shape=(p * c, 1, 1))
    weighted = [b.op("Mul", [branch, _channels(b, f"{name}.weight{i}", weights, i * c, c, (c, 1, 1))],
                     f"{name}.weighted{i}", shape=(c, h, w)) for i, branch in enumerate(branches)]
    return b.op("Sum", weighted, name)


def _maxpool(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    return b.op("MaxPool", ins, name, **_window(a), ceil_mode=a["ceil"])


def _avgpool(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    if a["kernel"]:
        return b.op("AveragePool", ins, name, **_window(a), ceil_mode=a["ceil"], count_include_pad=a["count_pad"])
    if a["size"] == 1:
        return b.op("GlobalAveragePool", ins, name)
    return onnx_pools.adaptive_avgpool(b, name, ins, a)


def _fc(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    # On a vector: decomposition put a Flatten before every fc that reads a map.
    return b.op("Gemm", [ins[0], b.weight(f"{name}.weight"), b.weight(f"{name}.bias")], name, transB=1)


def _relu6(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    return b.op("Clip", [ins[0], b.scalar(f"{name}.min", 0.0), b.scalar(f"{name}.max", 6.0)], name)


def _silu(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    return b.op("Mul", [ins[0], b.op("Sigmoid", ins, f"{name}.sigmoid", shape=b.in_shape(name))], name)


GELU_OPSET = 20  # the first with a Gelu op; before it, the erf formula


def _gelu(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    if b.opset >= GELU_OPSET:
        return b.op("Gelu", ins, name)  # approximate="none": the erf form, as nn.GELU's default
    # x * (1 + erf(x / sqrt(2))) / 2, in PyTorch's order: x * 0.5 * (1 + erf(x * M_SQRT1_2))
    shape = b.in_shape(name)
    scaled = b.op("Mul", [ins[0], b.scalar(f"{name}.sqrt1_2", np.sqrt(0.5))], f"{name}.scaled", shape=shape)
    erf = b.op("Erf", [scaled], f"{name}.erf", shape=shape)
    cdf = b.op("Add", [erf, b.scalar(f"{name}.one", 1.0)], f"{name}.cdf", shape=shape)
    half = b.op("Mul", [ins[0], b.scalar(f"{name}.half", 0.5)], f"{name}.half_x", shape=shape)
    return b.op("Mul", [half, cdf], name)


def _pad(b: _Builder, name: str, ins: list[str], a: dict) -> str:
    s = a["stride"]
    sliced = ins[0]
    if s != 1:
        consts = {
            k: b.const(f"{name}.{k}", np.array(v, np.int64))
            for k, v in (("starts", [0, 0]), ("ends", [2**62, 2**62]), ("axes", [2, 3]), ("steps", [s, s]))
        }
        c, h, w = b.in_shape(name)
        sliced = b.op("Slice", [ins[0], consts["starts"], consts["ends"], consts["axes"], consts["steps"]],
                      f"{name}.subsample", shape=(c, -(-h // s), -(-w // s)))
    pads = b.const(f"{name}.pads", np.array([0, a["pad_before"], 0, 0, 0, a["pad_after"], 0, 0], np.int64))
    return b.op("Pad", [sliced, pads], name)


CONVERTERS: dict[str, Callable[[_Builder, str, list[str], dict], str]] = {
    "conv": _conv,
    "bn": _bn,
    "gn": _gn,
    "channel_conv": _channel_conv,
    "blurpool": _blurpool,
    "relu": lambda b, name, ins, a: b.op("Relu", ins, name),
    "leaky_relu": lambda b, name, ins, a: b.op("LeakyRelu", ins, name, alpha=a["slope"]),
    "sigmoid": lambda b, name, ins, a: b.op("Sigmoid", ins, name),
    "relu6": _relu6,
    "silu": _silu,
    "gelu": _gelu,
    # ONNX's HardSigmoid is max(0, min(1, alpha * x + beta)); PyTorch's is relu6(x + 3) / 6.
    "hardsigmoid": lambda b, name, ins, a: b.op("HardSigmoid", ins, name, alpha=1 / 6, beta=0.5),
    "hardswish": lambda b, name, ins, a: b.op("HardSwish", ins, name),  # x * HardSigmoid(x; 1/6, 1/2)
    "softmax": lambda b, name, ins, a: b.op("Softmax", ins, name, axis=1),
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "lrn": lambda b, name, ins, a: b.op("LRN", ins, name, size=a["size"], alpha=a["alpha"], beta=a["beta"],
                                        bias=a["k"]),
    "flatten": lambda b, name, ins, a: b.op("Flatten", ins, name, axis=1),
    "fc": _fc,
    "add": lambda b, name, ins, a: b.op("Add", ins, name),  # decomposed: never gated
    "sub": lambda b, name, ins, a: b.op("Sub", ins, name),
    "mul": lambda b, name, ins, a: b.op("Mul", ins, name),
    "concat": lambda b, name, ins, a: b.op("Concat", ins, name, axis=1),
    "select": _select,
    "chunk": _chunk,
    "pad": _pad,
    **onnx_channels.CONVERTERS,  # ln, linear, scale
}


def check(graph: Graph) -> None:
    """Refuse, located and all at once, every op of `graph` this backend has no converter for
    (before any weights are made for it)."""
    check_supported(graph, "onnx", CONVERTERS, inference=True)


def to_onnx(graph: Graph, weights: dict[str, np.ndarray], opset: int = OPSET,
            metadata: dict[str, str] | None = None):
    """An onnx.ModelProto with input `input` (N x C x H x W) and one output: `logits`
    (N x classes), or `features` (N x C x H x W) for a network that ends in a feature map, or
    one output per name of the spec's `outputs`. `metadata` (e.g. spec_metadata(path)) is
    added to what the graph itself tells: resdsl's version, the network, its input and classes."""
    from onnx import TensorProto, checker, helper
    check_opset(opset)
    graph = decomposed(graph)
    check(graph)
    b = _Builder(graph, weights, opset)
    values = {INPUT: "input"}
    for name in graph.order():
        node = graph.node(name)
        if OPS[node.op].train_only:  # dropout, drop-path: the identity at inference
            values[name] = values[graph.inputs(name)[0]]
        elif node.op != "input":
            values[name] = CONVERTERS[node.op](
                b, name, [values[i] for i in graph.inputs(name)], node.attrs
            )
            b.shapes[values[name]] = graph.shape(name)
    outputs = []
    for name, node in graph.results():
        b.nodes.append(b.helper.make_node("Identity", [values[node]], [name], name=name))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *graph.shape(node)]))
    c, h, w = graph.shape(INPUT)
    # Every value a node makes, in the nodes' order (which is deterministic), less the graph's
    # outputs, which carry their shapes already. A value no converter gave a shape is a bug here.
    ends = {name for name, _ in graph.results()}
    value_info = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [BATCH, *b.shapes[v]])
                  for n in b.nodes for v in n.output if v not in ends]
    onnx_graph = helper.make_graph(
        b.nodes, graph.name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH, c, h, w])],
        outputs, initializer=b.initializers, value_info=value_info)
    model = _model(onnx_graph, opset)
    version = _version()
    model.producer_name, model.producer_version = "resdsl", version
    props = {"resdsl.version": version, "resdsl.network": graph.name, "resdsl.input": f"{c}x{h}x{w}"}
    if graph.outputs_classes():
        props["resdsl.classes"] = str(graph.shape(graph.output)[0])
    props["resdsl.outputs"] = ",".join(name for name, _ in graph.results())
    props.update(metadata or {})
    helper.set_model_props(model, props)
    spec = props.get("resdsl.spec")
    model.doc_string = (f"{graph.name}, compiled by resdsl {version}"
                        + (f" from {spec}" if spec else "") + f" (ONNX opset {opset})")
    checker.check_model(model, full_check=True)
    return model
