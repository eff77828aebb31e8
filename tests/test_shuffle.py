"""The channel shuffle (`shuffle`, ShuffleNet's) in every part of resdsl: against its formula written
here as a permutation of channel indices, in torch, ONNX Runtime and TVM llvm; no weights and no
MACs of its own; the generated code, fmt, graph and the located error. tests/specs/branches.rds puts
it through the backends' numeric and CUDA tests; torchvision's shufflenet_v2_x0_5 itself is
test_peers.py's."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import resdsl
from resdsl.backends.graphviz_render import describe
from resdsl.backends.onnx_export import max_opset, to_onnx
from resdsl.formatter import format_source

# A shuffle in 3 groups of 4 and ShuffleNet V2's unit: half the channels through a 1x1 conv, the
# other half as they are, concatenated and shuffled in 2.
SPEC = """
block mix(groups) {
    shuffle groups
    relu
}

block unit(width) {
    x1: branch input { chunk 0 }
    b: branch input {
        chunk 1
        conv width // 2
    }
    concat x1 b
    shuffle g2
}

network shuffles {
    input 12x5x3
    stem { s: sigmoid }
    stage mixed: mix(3) x 1
    stage units: unit(12) x 1
    outputs mixed, units
}
"""

# A shuffle outside any block, of a flat vector.
VECTOR = "network v { input 12x1x1; stem { flatten; top: shuffle 4 }; outputs top }"


def shuffled(x: np.ndarray, groups: int) -> np.ndarray:
    """Channel k of the output is channel (k % g) * (C / g) + k // g of the input: column k // g
    of the input's channels written as g rows, read column by column."""
    c = x.shape[1]
    return x[:, [(k % groups) * (c // groups) + k // groups for k in range(c)]]


def formula(x: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mixed = np.maximum(shuffled(1 / (1 + np.exp(-x.astype(np.float64))), 3), 0)
    converted = np.einsum("oc,nchw->nohw", weight.reshape(6, 6), mixed[:, 6:])
    return mixed, shuffled(np.concatenate([mixed[:, :6], converted], axis=1), 2)


@pytest.fixture(scope="module")
def case():
    net = resdsl.loads(SPEC, "shuffles.rds")
    rng = np.random.default_rng(0)
    weights = {"units.0.b.conv.weight": rng.standard_normal((6, 6, 1, 1)).astype(np.float32)}
    x = rng.standard_normal((2, 12, 5, 3)).astype(np.float32) * 2
    return net, weights, x, formula(x, weights["units.0.b.conv.weight"])


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_the_formula_is_torchvisions_channel_shuffle() -> None:
    """The index formula above against torchvision's view-transpose-view, on numbered channels."""
    x = torch.arange(2 * 12 * 2 * 2, dtype=torch.float32).reshape(2, 12, 2, 2)
    for g in (1, 2, 3, 4, 6, 12):
        expected = x.view(2, g, 12 // g, 2, 2).transpose(1, 2).contiguous().view(2, -1, 2, 2)
        assert np.array_equal(shuffled(x.numpy(), g), expected.numpy())


def test_shapes_and_no_weights_or_macs_of_their_own(case) -> None:
    net, weights, _, _ = case
    g = net.graph
    assert g.shape("mixed.0.shuffle") == (12, 5, 3) and g.shape("units.0.shuffle") == (12, 5, 3)
    assert g.node("mixed.0.shuffle").attrs == {"groups": 3} and g.node("units.0.shuffle").attrs == {"groups": 2}
    assert {k: tuple(v.shape) for k, v in net.to_torch().state_dict().items()} == {
        k: v.shape for k, v in weights.items()}
    assert net.params == 36 and net.macs == 36 * 5 * 3  # the 1x1 conv's alone


def test_torch_computes_the_formula(case) -> None:
    net, weights, x, expected = case
    model = net.to_torch().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    with torch.no_grad():
        outputs = model(torch.from_numpy(x))
    assert list(outputs) == ["mixed", "units"]
    for got, want in zip(outputs.values(), expected, strict=True):
        _close(got.numpy(), want)


def test_the_generated_code_shuffles_in_one_line(case) -> None:
    source = case[0].torch_source()
    assert "out = x.unflatten(1, (3, -1)).transpose(1, 2).flatten(1, 2)" in source
    assert "out = out.unflatten(1, (2, -1)).transpose(1, 2).flatten(1, 2)" in source
    assert "nn.ReLU()" in source  # not in place: a shuffle in 1 or C groups is a view of its input


@pytest.mark.parametrize("opset", sorted({17, max_opset()}))
def test_onnxruntime_computes_the_formula(case, opset: int) -> None:
    net, weights, x, (mixed, units) = case
    model = to_onnx(net.graph, weights, opset=opset)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Transpose") == 2 and ops.count("Reshape") == 4
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))
    _close(got["mixed"], mixed)
    _close(got["units"], units)


def test_a_stem_shuffles_a_vector_in_torch_and_onnx() -> None:
    """Outside a block, written in the network's own forward, and on a flat vector."""
    net = resdsl.loads(VECTOR, "v.rds")
    x = np.random.default_rng(1).standard_normal((3, 12, 1, 1)).astype(np.float32)
    with torch.no_grad():
        assert np.array_equal(net.to_torch().eval()(torch.from_numpy(x))["top"].numpy(), shuffled(x.reshape(3, 12), 4))
    session = ort.InferenceSession(to_onnx(net.graph, {}).SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"input": x})[0], shuffled(x.reshape(3, 12), 4))


@pytest.mark.tvm
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_tvm_llvm_computes_the_formula(case, layout: str) -> None:
    """Both layouts: under NHWC the channels are the innermost axis the shuffle splits."""
    import tvm

    from resdsl.tvm import build
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.target import make_target
    net, weights, x, expected = case
    library = build.build(build.relax_module(net.graph, weights, 2, Lowering(layout)), make_target("llvm"))
    outputs = tvm.relax.VirtualMachine(library, tvm.cpu())["main"](tvm.runtime.tensor(x))
    for got, want in zip(outputs, expected, strict=True):  # mixed, units
        _close(got.numpy(), want)


@pytest.mark.tvm
def test_tvm_llvm_shuffles_a_vector_in_nhwc() -> None:
    """A vector's channels are axis 1 whatever the layout of the maps."""
    import tvm

    from resdsl.tvm import build
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.target import make_target
    net = resdsl.loads(VECTOR, "v.rds")
    x = np.random.default_rng(2).standard_normal((2, 12, 1, 1)).astype(np.float32)
    library = build.build(build.relax_module(net.graph, {}, 2, Lowering("NHWC")), make_target("llvm"))
    got = tvm.relax.VirtualMachine(library, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert np.array_equal(got, shuffled(x.reshape(2, 12), 4))


def test_fmt_keeps_it_and_graph_labels_it(case) -> None:
    text = SPEC.replace("shuffle g2", "mixed: shuffle   groups=2")
    out = format_source(text)
    assert "mixed: shuffle g2" in out and "shuffle groups\n" in out and format_source(out) == out
    assert describe(case[0].graph, "units.0.shuffle") == "channel shuffle, 2 groups"


def test_groups_not_dividing_the_channels_is_a_located_error() -> None:
    with pytest.raises(resdsl.ResdslError) as caught:
        resdsl.loads(SPEC.replace("mix(3)", "mix(5)"), "bad.rds")
    assert caught.value.render().startswith(
        "bad.rds:3:5: error: shuffle groups=5 does not divide the channels (12)")
