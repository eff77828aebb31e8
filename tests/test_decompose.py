"""The decompose and fold-bn passes: what they leave in the graph, and that the graph still
computes what the torch backend's module (generated from the graph as written) computes, checked
by a float64 numpy interpreter of the primitive ops written here, independently of every backend."""
from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_onnx_backend import randomize_bn, rel_err

import resdsl
from resdsl.backends.onnx_export import to_onnx
from resdsl.backends.weights import expected_shapes
from resdsl.ops import OPS
from resdsl.passes.decompose import Decompose, composites, decomposed, on_a_copy
from resdsl.passes.fold_bn import FoldBatchNorm, FoldedBN, fold_weights

# Two highway blocks (the second with a B projection beside its gate) and an fc reading a 16x6x5
# map; the stem's BN has a non-default eps and is a named output (followed by sigmoid: the torch
# backend's in-place ReLU would overwrite it).
GATES = """
network gates {
    input 3x12x10
    classes 7
    outputs stem_bn, logits
    stem { conv1: conv 8 k3 p1 bias=1; stem_bn: bn eps=0.001; sigmoid }
    stage layer1: highway(8) x 1
    stage layer2: highway(16) x 1 stride 2
    head { logits: fc classes }
}
"""


def _conv(x: np.ndarray, w: np.ndarray, a: dict) -> np.ndarray:
    k, s, p, g = a["kernel"], a["stride"], a["padding"], a["groups"]
    assert a["dilation"] == 1
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    n, c, h, wd = win.shape[:4]
    win = win.reshape(n, g, c // g, h, wd, k, k)
    return np.einsum("ngchwij,gocij->ngohw", win, w.reshape(g, -1, c // g, k, k)).reshape(n, -1, h, wd)


def interpret(graph, weights: dict, x: np.ndarray) -> list[np.ndarray]:
    """The graph's results, in float64, from the ops a decomposed graph holds; a gated add or an fc
    on a map is refused (the point of decomposing is that no backend needs them)."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    values = {}
    for name in graph.order():
        node, ins = graph.node(name), [values[i] for i in graph.inputs(name)]
        op, a = node.op, node.attrs
        if op == "input":
            out = x.astype(np.float64)
        elif OPS[op].train_only:
            out = ins[0]
        elif op == "conv":
            out = _conv(ins[0], w[f"{name}.weight"], a)
            out = out + w[f"{name}.bias"][:, None, None] if a["bias"] else out
        elif op == "bn":
            scale = w[f"{name}.weight"] / np.sqrt(w[f"{name}.running_var"] + a["eps"])
            out = (ins[0] - w[f"{name}.running_mean"][:, None, None]) * scale[:, None, None]
            out = out + w[f"{name}.bias"][:, None, None]
        elif op == "fc":
            assert ins[0].ndim == 2, f"{name}: an fc on a map"
            out = ins[0] @ w[f"{name}.weight"].T + w[f"{name}.bias"]
        elif op == "add":
            assert not a["gated"] and len(ins) == 2, f"{name}: a gated add"
            out = ins[0] + ins[1]
        else:
            out = {"relu": lambda v: np.maximum(v, 0), "sigmoid": lambda v: np.exp(-np.logaddexp(0, -v)),
                   "flatten": lambda v: v.reshape(len(v), -1), "sub": np.subtract, "mul": np.multiply,
                   "avgpool": lambda v: v.mean(axis=(2, 3), keepdims=True)}[op](*ins)
        values[name] = out
    return [values[node] for _, node in graph.results()]


@pytest.fixture(scope="module")
def gates():
    """(network, trained-like weights, input, torch's outputs) for GATES."""
    net = resdsl.loads(GATES)
    model = net.to_torch(seed=1).eval()
    randomize_bn(model, net.graph.shape("<input>"), seed=1)
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(2).standard_normal((2, *net.graph.shape("<input>")), dtype=np.float32)
    with torch.no_grad():
        expected = [v.numpy() for v in model(torch.from_numpy(x)).values()]
    return net, weights, x, expected


def test_decompose_leaves_primitives_under_the_same_names(gates) -> None:
    net, *_ = gates
    before = [(n, net.graph.node(n).op) for n in net.graph.order()]
    graph = decomposed(net.graph)
    assert composites(net.graph) == ["layer1.0.add: a gated add", "layer2.0.add: a gated add",
                                     "logits: an fc reading a feature map"]
    assert composites(graph) == []
    assert [(n, net.graph.node(n).op) for n in net.graph.order()] == before  # decomposed on a copy
    assert set(before) <= {(n, graph.node(n).op) for n in graph.order()}  # every node keeps its name
    assert expected_shapes(graph) == expected_shapes(net.graph)  # so the state_dict still maps
    made = {n: (graph.node(n).op, graph.inputs(n)) for n in graph.order() if n.startswith("layer2.0.add")}
    assert made == {
        "layer2.0.add.t": ("sigmoid", ["layer2.0.gate"]),
        "layer2.0.add.diff": ("sub", ["layer2.0.act2", "layer2.0.downsample.1"]),
        "layer2.0.add.mix": ("mul", ["layer2.0.add.diff", "layer2.0.add.t"]),
        "layer2.0.add": ("add", ["layer2.0.add.mix", "layer2.0.downsample.1"]),
    }
    assert graph.inputs("logits") == ["logits.flatten"] and graph.shape("logits.flatten") == (16 * 6 * 5,)
    assert graph.node("layer2.0.add.t").scope == "layer2.0" and graph.blocks["layer2.0"].output == "layer2.0.add"
    assert Decompose().run(graph) is False  # idempotent


def test_the_decomposed_graph_computes_what_torch_does(gates) -> None:
    net, weights, x, expected = gates
    graph = decomposed(net.graph)
    assert rel_err(interpret(graph, weights, x), expected) < 1e-5
    with pytest.raises(AssertionError, match="gated add"):
        interpret(net.graph, weights, x)  # the interpreter cannot hide a composite form


def test_fold_bn_folds_what_follows_a_conv_alone(gates) -> None:
    net, weights, x, expected = gates
    graph = on_a_copy(net.graph, [Decompose(), FoldBatchNorm()])
    # Every BN follows a conv that nothing else reads: all fold, the convs keep their names.
    assert list(graph.nodes_of("bn")) == []
    assert graph.node("conv1").facts["folded_bn"] == FoldedBN("stem_bn", 0.001, True)
    assert graph.node("layer2.0.downsample.0").facts["folded_bn"] == FoldedBN("layer2.0.downsample.1", 1e-5, False)
    assert graph.results() == [("stem_bn", "conv1"), ("logits", "logits")]  # the output re-pointed
    assert graph.inputs("layer2.0.add.diff") == ["layer2.0.act2", "layer2.0.downsample.0"]
    assert FoldBatchNorm().run(graph) is False
    folded = fold_weights(graph, weights)
    assert not any(key.startswith("stem_bn.") for key in folded) and folded["conv1.weight"].dtype == np.float32
    unfolded = interpret(decomposed(net.graph), weights, x)
    assert rel_err(interpret(graph, folded, x), unfolded) < 1e-5
    assert rel_err(unfolded, expected) < 1e-5


def test_fold_bn_respects_eps() -> None:
    """Variances near eps, where using the default eps instead of the BN's would show."""
    net = resdsl.loads(GATES)
    graph = on_a_copy(net.graph, [FoldBatchNorm()])
    rng = np.random.default_rng(0)
    weights = {k: rng.standard_normal(s).astype(np.float32) for k, s in expected_shapes(net.graph).items()}
    for key, value in weights.items():
        if key.endswith("running_var"):
            weights[key] = rng.uniform(0, 2e-3, value.shape).astype(np.float32)
    x = rng.standard_normal((1, 3, 12, 10)).astype(np.float32)
    unfolded = interpret(decomposed(net.graph), weights, x)[0]
    assert rel_err(interpret(decomposed(graph), fold_weights(graph, weights), x)[0], unfolded) < 1e-5
    graph.node("conv1").facts["folded_bn"] = FoldedBN("stem_bn", 1e-5, True)  # the default eps instead
    assert rel_err(interpret(decomposed(graph), fold_weights(graph, weights), x)[0], unfolded) > 1e-2


def test_fold_bn_leaves_a_conv_others_read() -> None:
    net = resdsl.loads(GATES.replace("outputs stem_bn, logits", "outputs conv1, logits"))
    graph = on_a_copy(net.graph, [FoldBatchNorm()])
    assert list(graph.nodes_of("bn")) == ["stem_bn"]  # conv1 is an output: the BN stays
    assert "folded_bn" not in graph.node("conv1").facts
    net = resdsl.load("specs/cifar/preact_resnet164.rds")  # pre-activation: a BN after each add
    graph = on_a_copy(net.graph, [FoldBatchNorm()])
    sources = [graph.inputs(bn)[0] for bn in graph.nodes_of("bn")]
    assert {graph.node(s).op for s in sources} == {"add", "conv"}
    # A conv stays unfolded only where its output is read elsewhere too (the stem's, by the shortcut).
    assert all(len(graph.users(s)) > 1 for s in sources if graph.node(s).op == "conv")
    assert len(list(graph.nodes_of("bn"))) < len(list(net.graph.nodes_of("bn"))) // 2


def test_highway20_exports_to_onnx_and_runs_as_torch_does() -> None:
    net = resdsl.load("specs/cifar/highway20.rds")
    model = net.to_torch(seed=3).eval()
    randomize_bn(model, (3, 32, 32), seed=3)
    onnx_model = to_onnx(net.graph, {k: v.numpy() for k, v in model.state_dict().items()})
    ops = [n.op_type for n in onnx_model.graph.node]
    assert (ops.count("Sigmoid"), ops.count("Sub"), ops.count("Flatten")) == (9, 9, 1)
    assert "layer3.2.add.mix" in {n.name for n in onnx_model.graph.node}
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert rel_err(session.run(None, {"input": x})[0], expected) < 1e-5


def test_relax_lowers_conv_bn_relu_as_one_conv_with_a_bias() -> None:
    """The Relax module of conv + BN + ReLU and an fc on a map, as the tuned databases' kernels
    were made from: the BN folded into the conv's bias add, no transpose before the fc in NHWC."""
    pytest.importorskip("tvm")
    from resdsl.tvm.relax_frontend import to_relax
    net = resdsl.loads("network tiny { input 3x8x8\n classes 5\n stem { conv1: conv 4 k3 p1; bn1: bn; relu }\n"
                       " head { fc classes } }")
    model = net.to_torch(seed=0).eval()
    randomize_bn(model, (3, 8, 8))
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    for layout, entry in (("NCHW", []), ("NHWC", ["permute_dims"])):
        script = to_relax(net.graph, weights, layout=layout)["main"].script()
        calls = re.findall(r"= R\.([\w.]+)\(", script)
        assert calls == ["match_cast", *entry, "nn.conv2d", "add", "nn.relu", "reshape", "matmul", "add"], calls
