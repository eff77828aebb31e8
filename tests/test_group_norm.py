"""GroupNorm (`gn`, Wu & He 2018) in every part of resdsl: the formula, written here in numpy, in
torch, ONNX Runtime (the decomposition before opset 21, GroupNormalization from it) and TVM llvm;
weights without running statistics; the kind slot `norm=gn`; fmt, graph and located errors.
timm's resnet50_gn itself is test_peers.py's."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import resdsl
from resdsl.backends.graphviz_render import describe
from resdsl.backends.onnx_export import GROUP_NORM_OPSET, OPSET, max_opset, to_onnx
from resdsl.formatter import format_source

# Three group counts on 8 channels: 4 groups of 2, the whole sample (as LayerNorm over C, H, W),
# each channel alone (as InstanceNorm); an eps large enough to show where it is dropped.
SPEC = """
block norms(width) {
    a: branch input { gn 4 eps=0.5 }
    b: branch input { gn g1 }
    c: branch input { gn groups=8 eps=1e-3 }
    concat a b c
}

network group_norms {
    input 8x5x3
    stage all: norms(8) x 1
    outputs all
}
"""
GROUPS = {"all.0.a.gn": (4, 0.5), "all.0.b.gn": (1, 1e-5), "all.0.c.gn": (8, 1e-3)}


def group_norm(x: np.ndarray, groups: int, eps: float, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    n, c = x.shape[:2]
    grouped = x.astype(np.float64).reshape(n, groups, -1)
    mean = grouped.mean(axis=2, keepdims=True)
    var = grouped.var(axis=2, keepdims=True)  # biased, as the paper and PyTorch
    normed = ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return normed * weight.reshape(1, c, 1, 1) + bias.reshape(1, c, 1, 1)


@pytest.fixture(scope="module")
def case():
    net = resdsl.loads(SPEC, "group_norms.rds")
    rng = np.random.default_rng(0)
    weights = {key: rng.uniform(0.5, 1.5, 8).astype(np.float32) if key.endswith("weight")
               else rng.uniform(-0.5, 0.5, 8).astype(np.float32) for key in net.to_torch().state_dict()}
    # Channels of different scales and offsets, one of them nearly constant, so eps shows.
    x = (rng.standard_normal((2, 8, 5, 3)) * np.geomspace(0.01, 3.0, 8).reshape(1, 8, 1, 1)
         + rng.uniform(-2, 2, (1, 8, 1, 1))).astype(np.float32)
    expected = np.concatenate([group_norm(x, g, eps, weights[f"{name}.weight"], weights[f"{name}.bias"])
                               for name, (g, eps) in GROUPS.items()], axis=1)
    return net, weights, x, expected


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_the_layers_own_a_weight_and_bias_and_no_statistics(case) -> None:
    net, _, _, _ = case
    assert {n: (net.graph.node(n).attrs["groups"], net.graph.node(n).attrs["eps"]) for n in GROUPS} == GROUPS
    state = net.to_torch().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        f"{n}.{key}": (8,) for n in GROUPS for key in ("weight", "bias")}
    assert net.params == 3 * 2 * 8 and net.macs == 0


def test_torch_computes_the_formula(case) -> None:
    net, weights, x, expected = case
    model = net.to_torch()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    source = net.torch_source()
    assert "nn.GroupNorm(4, in_channels, eps=0.5)" in source and "nn.GroupNorm(1, in_channels)" in source
    with torch.no_grad():
        _close(model.eval()(torch.from_numpy(x))["all"].numpy(), expected)
        _close(model.train()(torch.from_numpy(x))["all"].numpy(), expected)  # no batch statistics


def test_the_eps_matters_here(case) -> None:
    """With every eps at the default the output differs by far more than the tolerance."""
    _, weights, x, expected = case
    changed = group_norm(x, 4, 1e-5, weights["all.0.a.gn.weight"], weights["all.0.a.gn.bias"])
    assert np.abs(changed - expected[:, :8]).max() > 1e-2


@pytest.mark.parametrize("opset", sorted({OPSET, GROUP_NORM_OPSET - 1, GROUP_NORM_OPSET, max_opset()}))
def test_onnxruntime_computes_the_formula(case, opset) -> None:
    net, weights, x, expected = case
    model = to_onnx(net.graph, weights, opset=opset)
    ops = {n.op_type for n in model.graph.node}
    assert ("GroupNormalization" in ops) == (opset >= GROUP_NORM_OPSET)
    assert ("InstanceNormalization" in ops) == (opset < GROUP_NORM_OPSET)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    _close(session.run(None, {"input": x})[0], expected)


@pytest.mark.tvm
def test_tvm_llvm_computes_the_formula_in_nchw(case) -> None:
    """NCHW here; tests/specs/group_norm.rds runs the default lowering (NHWC) in test_tvm_backend."""
    import tvm

    from resdsl.tvm import build as tvm_build
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.target import make_target
    net, weights, x, expected = case
    executable = tvm_build.build(tvm_build.relax_module(net.graph, weights, 2, Lowering("NCHW")),
                                 make_target("llvm"))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    _close(vm["main"](tvm.runtime.tensor(x)).numpy(), expected)


# ---- the kind slot: `norm=gn` ----------------------------------------------------------------------
MIXED = """
network mixed {
    input 3x8x8
    classes 5
    stem { conv1: conv 32 k3 p1; bn1: bn; relu }
    stage layer1: basic(32) x 1
    stage layer2: basic(32, norm=gn) x 2
    head { avgpool; fc classes }
}
"""


def test_a_block_given_norm_gn_gets_32_groups_and_its_own_modules() -> None:
    net = resdsl.loads(MIXED, "mixed.rds")
    model = net.to_torch(seed=0)
    norms = {name: (type(m).__name__, getattr(m, "num_groups", None)) for name, m in model.named_modules()
             if name.endswith(("bn1", "bn2")) and "." in name}
    assert norms == {"layer1.0.bn1": ("BatchNorm2d", None), "layer1.0.bn2": ("BatchNorm2d", None),
                     **{f"layer2.{i}.bn{j}": ("GroupNorm", 32) for i in (0, 1) for j in (1, 2)}}
    # nn.GroupNorm takes its groups before the channels: no `norm_layer(width)` can make both kinds,
    # so the generated classes write each kind's module as it is, not a norm_layer argument.
    source = net.torch_source()
    assert "norm_layer" not in source and source.count("nn.GroupNorm(32, 32)") == 2
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    # GroupNorm has no running statistics: 4 norms of 32 channels lose 2 x 32 buffers each.
    bn = resdsl.loads(MIXED.replace(", norm=gn", ""), "bn.rds").to_torch(seed=0)
    assert len(bn.state_dict()) - len(model.state_dict()) == 4 * 3  # running_mean, running_var, counter


def test_groups_that_do_not_divide_a_blocks_width_are_a_located_error() -> None:
    with pytest.raises(resdsl.ResdslError) as caught:
        resdsl.loads(MIXED.replace("basic(32, norm=gn)", "basic(48, norm=gn)"), "mixed.rds")
    text = caught.value.render()
    assert text.startswith("mixed.rds:7:5: error: gn groups=32 does not divide the channels (48)"), text
    assert "at `bn1: norm`" in text


def test_an_eps_that_is_not_positive_is_a_located_error() -> None:
    with pytest.raises(resdsl.ResdslError) as caught:
        resdsl.loads(MIXED.replace("bn1: bn;", "bn1: gn eps=0;"), "eps.rds")
    assert caught.value.render().startswith("eps.rds:5:42: error: `eps` must be greater than 0, not 0")


# ---- fmt and graph ---------------------------------------------------------------------------------
def test_fmt_writes_the_short_form_and_keeps_the_network() -> None:
    text = SPEC.replace("gn groups=8 eps=1e-3", "gn eps=1e-3 groups=8")
    out = format_source(text)
    assert "        gn eps=1e-3 g8\n" in out and "        gn g1\n" in out
    assert format_source(out) == out
    assert resdsl.loads(out, "a.rds").summary() == resdsl.loads(text, "a.rds").summary()


def test_graph_labels_each_norm_with_its_groups(case) -> None:
    net = case[0]
    assert [describe(net.graph, n) for n in GROUPS] == [
        "a.gn\ngn, 4 groups", "b.gn\ngn, 1 group", "c.gn\ngn, 8 groups"]
