"""ConvNeXt's layer ops in every part of resdsl: `ln` (LayerNorm over channels at each pixel),
`linear` (nn.Linear at each pixel) and `scale` (a learnable factor per channel, its key the label
itself), each against its formula written here in numpy, in torch, ONNX Runtime and TVM llvm;
state_dict keys and shapes as timm's and torchvision's ConvNeXt blocks have them; parameters,
MACs, fmt and graph. tests/specs/convnext_ops.rds puts them through the backends' numeric and
CUDA tests; the bad inputs are specs/bad/ln_eps_not_positive, scale_dims, scale_width_mismatch."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT
from test_group_norm import _close

import resdsl
from resdsl.backends.graphviz_render import describe
from resdsl.backends.onnx_export import OPSET, max_opset, to_onnx
from resdsl.formatter import format_source

# On a 6x5x3 map: a LayerNorm whose eps matters, a per-pixel linear to 4, a (C, 1, 1) scale; then
# on the pooled, flattened vector: a LayerNorm, a linear to 3 and a (C,) scale.
SPEC = """
network convnext_layers {
    input 6x5x3
    stem { norm: ln eps=0.5; fc1: linear 4; ls: scale 4 dims=3 init=0.5; avgpool; flatten; vnorm: ln; vfc: linear 3; vs: scale }
    outputs norm, fc1, ls, vnorm, vfc, vs
}
"""
SHAPES = {"norm.weight": (6,), "norm.bias": (6,), "fc1.weight": (4, 6), "fc1.bias": (4,), "ls": (4, 1, 1),
          "vnorm.weight": (4,), "vnorm.bias": (4,), "vfc.weight": (3, 4), "vfc.bias": (3,), "vs": (3,)}


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """Each pixel's channels (axis 1) normalised by their mean and biased variance."""
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean) / np.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """y[n, o, ...] = sum over c of weight[o, c] x[n, c, ...] + bias[o], at every pixel."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.einsum("oc,nc...->no...", weight, x) + bias.reshape(shape)


@pytest.fixture(scope="module")
def case():
    net = resdsl.loads(SPEC, "convnext_layers.rds")
    rng = np.random.default_rng(0)
    weights = {key: rng.uniform(0.5, 1.5, shape).astype(np.float32) for key, shape in SHAPES.items()}
    # Channels of different offsets and scales, one pixel nearly constant, so eps shows.
    x = (rng.standard_normal((2, 6, 5, 3)) * np.geomspace(0.05, 2.0, 6).reshape(1, 6, 1, 1)
         + rng.uniform(-2, 2, (1, 6, 1, 1))).astype(np.float32)
    x[:, :, 0, 0] = 0.25
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    norm = layer_norm(x.astype(np.float64), w["norm.weight"], w["norm.bias"], 0.5)
    fc1 = linear(norm, w["fc1.weight"], w["fc1.bias"])
    ls = fc1 * w["ls"]
    vnorm = layer_norm(ls.mean(axis=(2, 3)), w["vnorm.weight"], w["vnorm.bias"], 1e-6)
    vfc = linear(vnorm, w["vfc.weight"], w["vfc.bias"])
    expected = {"norm": norm, "fc1": fc1, "ls": ls, "vnorm": vnorm, "vfc": vfc, "vs": vfc * w["vs"]}
    return net, weights, x, expected


def test_the_layers_own_what_nn_linear_and_layernorm_own(case) -> None:
    net, _, _, _ = case
    state = net.to_torch().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == SHAPES
    assert net.params == sum(int(np.prod(s)) for s in SHAPES.values())
    assert net.macs == 5 * 3 * 4 * 6 + 3 * 4  # the per-pixel linear at 15 pixels, the vector's; no others


def test_torch_computes_the_formulas(case) -> None:
    net, weights, x, expected = case
    model = net.to_torch()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    with torch.no_grad():
        got = model.eval()(torch.from_numpy(x))
    for name, want in expected.items():
        _close(got[name].numpy(), want)
    source = net.torch_source()
    assert "nn.LayerNorm(6, eps=0.5)" in source and "nn.LayerNorm(4, eps=1e-06)" in source
    assert "nn.Parameter(torch.full((4, 1, 1), 0.5))" in source and "nn.Parameter(torch.full((3,), 1e-06))" in source


def test_the_eps_matters_here(case) -> None:
    _, weights, x, expected = case
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    changed = layer_norm(x.astype(np.float64), w["norm.weight"], w["norm.bias"], 1e-6)
    assert np.abs(changed - expected["norm"]).max() > 1e-2


def test_a_fresh_scale_starts_at_its_init(case) -> None:
    """ConvNeXt's layer scale starts at 1e-6 (timm's ls_init_value, torchvision's layer_scale)."""
    model = case[0].to_torch(seed=0)
    assert torch.equal(model.ls, torch.full((4, 1, 1), 0.5)) and torch.equal(model.vs, torch.full((3,), 1e-6))


@pytest.mark.parametrize("opset", sorted({OPSET, max_opset()}))
def test_onnxruntime_computes_the_formulas(case, opset) -> None:
    net, weights, x, expected = case
    model = to_onnx(net.graph, weights, opset=opset)
    assert {"LayerNormalization", "Conv", "Gemm", "Mul"} <= {n.op_type for n in model.graph.node}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for name, got in zip(names, session.run(None, {"input": x}), strict=True):
        _close(got, expected[name])


@pytest.mark.tvm
def test_tvm_llvm_computes_the_formulas_in_nchw(case) -> None:
    """NCHW here; tests/specs/convnext_ops.rds runs the default lowering in test_tvm_backend."""
    import tvm

    from resdsl.tvm import build as tvm_build
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.target import make_target
    net, weights, x, expected = case
    executable = tvm_build.build(tvm_build.relax_module(net.graph, weights, 2, Lowering("NCHW")),
                                 make_target("llvm"))
    got = tvm.relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x))
    for (name, _), value in zip(net.graph.outputs, got, strict=True):
        _close(value.numpy(), expected[name])


# ---- the peers' blocks: their state_dict keys, in their order ---------------------------------------
BLOCKS = """
block timm_block(dim) {{
    conv_dw: conv dim k7 p3 g=dim bias=1
    norm: ln
    mlp.fc1: linear dim * 4
    mlp.act: gelu
    mlp.fc2: linear dim
    gamma: scale dim
    add shortcut
}}

block tv_block(dim) {{
    block.0: conv dim k7 p3 g=dim bias=1
    block.2: ln
    block.3: linear dim * 4
    block.4: gelu
    block.5: linear dim
    layer_scale: scale dim dims=3
    add shortcut
}}

network peer_block {{
    input 96x8x8
    stage {stage}: {block}(96) x 1
    outputs {stage}
}}
"""


@pytest.mark.parametrize("peer, block, stage, prefix", [
    ("timm_convnext_tiny", "timm_block", "blocks", "stages.0.blocks.0."),
    ("tv_convnext_tiny", "tv_block", "features", "features.1.0.")])
def test_a_convnext_block_has_its_peers_state_dict(peer: str, block: str, stage: str, prefix: str) -> None:
    """The first block of each peer's stage 1, from its fixture: keys (the scale's first, as a
    parameter of the block), shapes and dtypes, in order."""
    fixture = json.loads((ROOT / "tests" / "peers" / f"{peer}.json").read_text())
    want = [[k.removeprefix(prefix), s, d] for k, s, d in fixture["state_dict"] if k.startswith(prefix)]
    net = resdsl.loads(BLOCKS.format(block=block, stage=stage), "peer.rds")
    state = net.to_torch().state_dict()
    got = [[k.removeprefix(f"{stage}.0."), list(v.shape), str(v.dtype).removeprefix("torch.")]
           for k, v in state.items()]
    assert got == want


def test_a_convnext_block_computes_the_peers_forward() -> None:
    """torchvision's CNBlock in eval, written here with torch.nn.functional: x + layer_scale *
    (Linear, GELU, Linear after LayerNorm of the channels-last depthwise conv)."""
    net = resdsl.loads(BLOCKS.format(block="tv_block", stage="features"), "peer.rds")
    model = net.to_torch(seed=0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.copy_(torch.randn(t.shape, generator=g) * 0.2)
        p = {k.removeprefix("features.0."): v for k, v in model.state_dict().items()}
        x = torch.randn(2, 96, 8, 8, generator=g)
        y = torch.nn.functional.conv2d(x, p["block.0.weight"], p["block.0.bias"], padding=3, groups=96)
        y = torch.nn.functional.layer_norm(y.permute(0, 2, 3, 1), (96,), p["block.2.weight"], p["block.2.bias"], 1e-6)
        y = torch.nn.functional.gelu(torch.nn.functional.linear(y, p["block.3.weight"], p["block.3.bias"]))
        y = torch.nn.functional.linear(y, p["block.5.weight"], p["block.5.bias"]).permute(0, 3, 1, 2)
        torch.testing.assert_close(model(x)["features"], x + p["layer_scale"] * y, rtol=1e-5, atol=1e-5)


# ---- errors, fmt, graph ------------------------------------------------------------------------------
def test_a_map_shaped_scale_on_a_vector_is_a_located_error() -> None:
    with pytest.raises(resdsl.ResdslError) as caught:
        resdsl.loads(SPEC.replace("vs: scale", "vs: scale dims=3"), "vec.rds")
    assert caught.value.render().startswith(
        "vec.rds:4:118: error: scale dims=3 is shaped for a CxHxW map, not the vector 3")


def test_fmt_keeps_the_layers_and_their_attributes(case) -> None:
    out = format_source(SPEC.replace("linear 4", "linear out=4"))
    assert "\n        ls: scale 4 dims=3 init=0.5\n" in out and "\n        norm: ln eps=0.5\n" in out
    assert "\n        fc1: linear out=4\n" in out and format_source(out) == out
    assert resdsl.loads(out, "a.rds").summary() == case[0].summary()


def test_graph_labels_each_layer(case) -> None:
    net = case[0]
    assert [describe(net.graph, n) for n in ("norm", "fc1", "ls", "vfc")] == [
        "norm\nlayer norm over C", "fc1\nlinear 4 per pixel", "ls\nscale per channel", "vfc\nlinear 3"]


def test_the_mlp_runs_channels_last_between_one_permute_and_one_back() -> None:
    """ConvNeXt's block as torchvision writes it: LayerNorm, Linear, GELU, Linear on one NHWC
    view (a permute there and back per layer cost ConvNeXt-T 6% of its forward)."""
    source = resdsl.load("specs/tv_convnext_tiny.rds").torch_source()
    block = source[source.index("class CnblockBlock"):].split("def forward", 1)[1].split("\n\n")[0]
    assert block.count(".permute(0, 2, 3, 1)") == 1 and block.count(".permute(0, 3, 1, 2)") == 1
    assert "        out = self.block[\"4\"](out)\n" in block  # GELU, on the channels-last view
