"""Non-square windows: `k1x7 p0x3 s2x1` (and `kernel=(1, 7)`) are (height, width) pairs, as
PyTorch's tuple arguments, through shapes, params and MACs, torch, ONNX, TVM, `fmt` and `graph`.
Checked against torch.nn.functional called with the same tuples, not against resdsl itself."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import resdsl
from resdsl.backends.graphviz_render import describe
from resdsl.backends.onnx_export import to_onnx
from resdsl.formatter import format_source

SPEC = """
block factorised(c, n = 7) {
    a: conv c k=(1, n) p=(0, n // 2) bias=1
    b: conv c k7x1 s2x1 p3x0 bias=1
    m: maxpool k3x1 s1x2 p1x0
    v: avgpool k1x3 s2x1 p0x1 count_pad=0
    q: conv c k3
}

network pairs {
    input 3x12x10
    classes 5
    stem { stem: conv 4 k3x1 p1x0 }
    stage s: factorised(6)
    head { avgpool; fc: fc classes }
}
"""


@pytest.fixture(scope="module")
def net() -> resdsl.Network:
    return resdsl.loads(SPEC, "pairs.rds")


@pytest.fixture(scope="module")
def case(net):
    module = net.to_torch(seed=0).eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 10)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    return module, x, want


def _functional(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The spec by hand, every window a PyTorch tuple."""
    x = F.conv2d(x, w["stem.weight"], padding=(1, 0))
    x = F.conv2d(x, w["s.a.weight"], w["s.a.bias"], padding=(0, 3))
    x = F.conv2d(x, w["s.b.weight"], w["s.b.bias"], stride=(2, 1), padding=(3, 0))
    x = F.max_pool2d(x, (3, 1), stride=(1, 2), padding=(1, 0))
    x = F.avg_pool2d(x, (1, 3), stride=(2, 1), padding=(0, 1), count_include_pad=False)
    x = F.conv2d(x, w["s.q.weight"])
    return F.linear(x.mean((2, 3)), w["fc.weight"], w["fc.bias"])


def test_shapes_weights_and_macs_are_per_dimension(net) -> None:
    shapes = {name: net.graph.shape(name) for name in ("stem", "s.a", "s.b", "s.m", "s.v", "s.q")}
    # Each dimension (size + 2p - k) // s + 1 on its own: 3x1 p1x0 keeps 12x10, 1x7 p0x3 too;
    # 7x1 s2x1 p3x0 halves the height (6x10), 3x1 s1x2 p1x0 the width (6x5), 1x3 s2x1 p0x1 the
    # height (3x5), and a square 3: 1x3.
    assert shapes == {"stem": (4, 12, 10), "s.a": (6, 12, 10), "s.b": (6, 6, 10), "s.m": (6, 6, 5),
                      "s.v": (6, 3, 5), "s.q": (6, 1, 3)}
    module = net.to_torch()
    assert module.state_dict()["s.a.weight"].shape == (6, 4, 1, 7)
    assert module.state_dict()["s.b.weight"].shape == (6, 6, 7, 1)
    assert net.params == sum(p.numel() for p in module.parameters())
    conv_macs = 4 * 12 * 10 * 3 * 3 + 6 * 12 * 10 * 4 * 7 + 6 * 6 * 10 * 6 * 7 + 6 * 1 * 3 * 6 * 9
    assert net.macs == conv_macs + 5 * 6  # and the fc's


def test_torch_computes_what_functional_tuples_compute(case) -> None:
    module, x, want = case
    w = module.state_dict()
    with torch.no_grad():
        expected = _functional(w, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(want, expected, rtol=1e-5, atol=1e-5)


def test_torch_source_writes_tuples_only_where_not_square(net) -> None:
    source = net.torch_source()
    assert "nn.Conv2d(in_channels, c, kernel_size=(1, n), padding=(0, n // 2))" in source
    assert "nn.Conv2d(c, c, kernel_size=(7, 1), stride=(2, 1), padding=(3, 0))" in source
    assert "nn.MaxPool2d(kernel_size=(3, 1), stride=(1, 2), padding=(1, 0))" in source
    assert "kernel_size=3, bias=False" in source  # a square kernel stays one number


def test_onnxruntime_equals_torch(net, case) -> None:
    module, x, want = case
    model = to_onnx(net.graph, {k: v.numpy() for k, v in module.state_dict().items()})
    conv = next(n for n in model.graph.node if n.name == "s.b")
    attrs = {a.name: list(a.ints) for a in conv.attribute if a.ints}
    assert attrs["kernel_shape"] == [7, 1] and attrs["strides"] == [2, 1] and attrs["pads"] == [3, 0, 3, 0]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.tvm
def test_tvm_llvm_equals_torch(net, case) -> None:
    """The llvm default lowering (NHWC, Winograd on square 3x3s): one tiny build."""
    import tvm

    from resdsl.tvm import build as tvm_build
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.target import make_target
    module, x, want = case
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    executable = tvm_build.build(tvm_build.relax_module(net.graph, weights, 2, Lowering.default("llvm")),
                                 make_target("llvm"))
    got = tvm.relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x))
    got = got if hasattr(got, "numpy") else got[0]  # one output, or a tuple of one
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


def test_fmt_writes_literal_pairs_short_and_keeps_expressions() -> None:
    out = format_source(SPEC)
    assert "a: conv c k=(1, n) p=(0, n // 2) bias=1" in out
    assert "b: conv c k7x1 s2x1 p3x0 bias=1" in out
    assert format_source("network n { stem { conv 8 kernel=(1, 7) padding=(0, 3) } }\n").count("k1x7 p0x3") == 1
    assert format_source(out) == out
    assert resdsl.loads(out, "again.rds").graph.shape("s.v") == (6, 3, 5)


def test_graph_labels_say_height_by_width(net) -> None:
    assert describe(net.graph, "s.b") == "b\nconv 7x1, 6, /2x1"
    assert describe(net.graph, "s.m") == "m\nmaxpool 3x1, /1x2"
    assert describe(net.graph, "s.q") == "q\nconv 3x3, 6"


def test_a_square_pair_is_the_square_number() -> None:
    square = resdsl.loads(SPEC.replace("k3\n", "k3x3\n"), "square.rds")
    assert square.graph.node("s.q").attrs["kernel"] == 3
    assert "kernel_size=3, bias=False" in square.torch_source()


def test_a_shortcut_projects_at_the_branchs_pair_of_strides() -> None:
    spec = SPEC.replace("q: conv c k3\n", "q: conv c k3 p1\n    add shortcut\n").replace("classes 5", "classes 5\n    shortcut B")
    net = resdsl.loads(spec, "projected.rds")
    module = net.to_torch(seed=0)
    # The branch strides 2x1 (b), then 1x2 (m), then 2x1 (v): its projection strides 4x2.
    assert module.s.downsample[0].stride == (4, 2) and net.graph.shape("s.add") == (6, 3, 5)
    assert module(torch.zeros(1, 3, 12, 10)).shape == (1, 5)


def test_the_lexer_reads_a_pair_as_one_attribute() -> None:
    from pygments.token import Name

    from resdsl.highlight import RdsLexer
    tokens = [(t, v) for t, v in RdsLexer().get_tokens("conv 8 k1x7 p0x3 s2\n") if v.strip()]
    assert [v for t, v in tokens if t is Name.Attribute] == ["k1x7", "p0x3", "s2"]
