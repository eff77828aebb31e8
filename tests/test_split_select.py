"""The channel split (`chunk`) and the join that weights branches by a softmax across them
(`select`) in every part of resdsl: each against its formula written here in numpy, in torch, ONNX
Runtime and TVM llvm; no weights and no MACs of their own; the generated code, fmt, graph and the
located errors. tests/specs/branches.rds puts both through the backends' numeric and CUDA tests;
timm's skresnet18 and resnest14d themselves are test_peers.py's."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import resdsl
from resdsl.backends.graphviz_render import describe
from resdsl.backends.onnx_export import max_opset, to_onnx
from resdsl.formatter import format_source

# Three chunks of the input weighted back by a softmax across them, the logits a 1x1 conv of
# the pooled input; a chunk's in-place activation beside the input it is a view of.
SPEC = """
block pick(width, parts = 3) {
    a: branch input { chunk 0 n=parts }
    b: branch input { chunk 1 n=parts }
    c: branch input { chunk 2 n=parts }
    avgpool
    fc: conv width * 3 bias=1
    select a b c
}

block halves(width) {
    a: branch input { chunk 0; hardswish }
    b: branch input { chunk 1 n=2; sigmoid }
    concat a b input
}

network picks {
    input 12x5x3
    stem { s: sigmoid }
    stage picked: pick(4) x 1
    stage halved: halves(4) x 1
    outputs picked, halved
}
"""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def formula(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(picked, halved) of SPEC: x's channels cut in 3 chunks of 4, each weighted per channel by
    the softmax over the chunks of the logits (branch-major: logit p * 4 + c), summed; and the
    4 channels that follow cut in 2, hardswish and sigmoid, then those 4 as they were."""
    s = _sigmoid(x.astype(np.float64))
    logits = np.einsum("oc,nc->no", weight.reshape(12, 12), s.mean(axis=(2, 3))) + bias
    weights = np.exp(logits.reshape(-1, 3, 4))
    weights /= weights.sum(axis=1, keepdims=True)
    chunks = s.reshape(s.shape[0], 3, 4, *s.shape[2:])
    picked = (chunks * weights[..., None, None]).sum(axis=1)
    first, second = picked[:, :2], picked[:, 2:]
    hardswish = first * np.clip(first + 3, 0, 6) / 6
    return picked, np.concatenate([hardswish, _sigmoid(second), picked], axis=1)


@pytest.fixture(scope="module")
def case():
    net = resdsl.loads(SPEC, "picks.rds")
    rng = np.random.default_rng(0)
    weights = {"picked.0.fc.weight": rng.standard_normal((12, 12, 1, 1)).astype(np.float32) * 3,
               "picked.0.fc.bias": rng.standard_normal(12).astype(np.float32)}
    x = rng.standard_normal((2, 12, 5, 3)).astype(np.float32) * 2
    return net, weights, x, formula(x, weights["picked.0.fc.weight"], weights["picked.0.fc.bias"])


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_shapes_and_no_weights_or_macs_of_their_own(case) -> None:
    net, weights, _, _ = case
    g = net.graph
    assert [g.shape(f"picked.0.{b}.chunk") for b in "abc"] == [(4, 5, 3)] * 3
    assert g.shape("picked.0.select") == (4, 5, 3) and g.shape("halved.0.cat") == (8, 5, 3)
    assert g.inputs("picked.0.select") == ["picked.0.a.chunk", "picked.0.b.chunk", "picked.0.c.chunk",
                                           "picked.0.fc"]  # the branches, then the logits
    assert {k: tuple(v.shape) for k, v in net.to_torch().state_dict().items()} == {
        k: v.shape for k, v in weights.items()}
    assert net.params == 12 * 12 + 12 and net.macs == 12 * 12  # the 1x1 conv's alone


def test_torch_computes_the_formulas(case) -> None:
    net, weights, x, (picked, halved) = case
    model = net.to_torch().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    _close(out["picked"].numpy(), picked)
    _close(out["halved"].numpy(), halved)  # the hardswish wrote no chunk's input in place


def test_the_generated_code_chunks_stacks_and_softmaxes(case) -> None:
    source = case[0].torch_source()
    assert "a = x.chunk(3, 1)[0]" in source and "c = x.chunk(3, 1)[2]" in source
    assert "out = out.unflatten(1, (3, -1)).softmax(1)" in source
    assert "out = (torch.stack([a, b, c], 1) * out).sum(1)" in source
    assert "nn.Hardswish()" in source  # not in place: its input is a view of x


@pytest.mark.parametrize("opset", sorted({17, max_opset()}))
def test_onnxruntime_computes_the_formulas(case, opset: int) -> None:
    net, weights, x, (picked, halved) = case
    model = to_onnx(net.graph, weights, opset=opset)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Slice") == 3 + 2 + 3 and ops.count("Softmax") == 1 and ops.count("Sum") == 1
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))
    _close(got["picked"], picked)
    _close(got["halved"], halved)


@pytest.mark.tvm
def test_tvm_llvm_computes_the_formulas_in_nchw(case) -> None:
    """NCHW here; tests/specs/branches.rds runs the default lowering (NHWC) in test_tvm_backend."""
    import tvm

    from resdsl.tvm import build as tvm_build
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.target import make_target
    net, weights, x, (picked, halved) = case
    executable = tvm_build.build(tvm_build.relax_module(net.graph, weights, 2, Lowering("NCHW")),
                                 make_target("llvm"))
    out = tvm.relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x))
    _close(out[0].numpy(), picked)
    _close(out[1].numpy(), halved)


def test_fmt_keeps_them_and_graph_labels_them(case) -> None:
    text = SPEC.replace("select a b c", "mix: select   a b  c")
    out = format_source(text)
    assert "mix: select a b c" in out and "chunk 1 n=parts" in out and format_source(out) == out
    g = case[0].graph
    assert describe(g, "picked.0.b.chunk") == "b.chunk\nchunk 1 of 3"
    assert describe(g, "picked.0.select") == "softmax-weighted sum of 3"


# ---- located errors that specs/bad does not show -----------------------------------------------------
def _error(text: str) -> str:
    with pytest.raises(resdsl.ResdslError) as caught:
        resdsl.loads(text, "bad.rds")
    return caught.value.render()


def test_select_cannot_name_its_logits_or_a_branch_twice() -> None:
    current = _error(SPEC.replace("select a b c", "logits: relu\n    select a b logits"))
    assert "bad.rds:9:16: error: `select` names `logits`, the current value: that is its logits" in current
    twice = _error(SPEC.replace("select a b c", "select a b a"))
    assert "error: `select` names `a` twice" in twice


def test_a_chunk_in_the_stem_or_head_is_an_expression_of_x() -> None:
    """The network's own forward writes a chunk as a block's does (a view: the ReLU reading it is
    not in place, so training can differentiate through it)."""
    net = resdsl.loads("network n { input 4x8x8; classes 3; stem { conv1: conv 8 k3 p1; chunk 1; relu }\n"
                       "head { chunk 0; avgpool; fc classes } }", "stem.rds")
    source = net.torch_source()
    assert "        x = x.chunk(2, 1)[1]\n" in source and "nn.ReLU()" in source
    module = net.to_torch(seed=0)
    x = torch.randn(2, 4, 8, 8)
    s = module.state_dict()
    h = torch.relu(torch.nn.functional.conv2d(x, s["conv1.weight"], padding=1)[:, 4:])[:, :2].mean((2, 3))
    torch.testing.assert_close(module.eval()(x), h @ s["fc.weight"].T + s["fc.bias"])
    module.train()(x).sum().backward()


def test_res2nets_blocks_are_two_classes_in_their_own_terms() -> None:
    """A chunk of `w * 4` channels in 4 is `w` wide, and the concat of four `w` is `w * 4`, so every
    stage's blocks share a class, as timm's Bottle2neck (its first blocks another)."""
    source = resdsl.load("specs/res2net50_26w_4s.rds").torch_source()
    assert source.count("\nclass ") == 3  # Bottle2neckFirstBlock, Bottle2neckBlock, the network
    assert 'self.convs["0"] = nn.Conv2d(w, w, kernel_size=3, padding=1, bias=False)' in source
    assert "self.conv3 = nn.Conv2d(w * 4, width * 4, kernel_size=1, bias=False)" in source
