"""ECA's 1-D conv across channels (`channel_conv`, the prelude's `eca` block) and the fixed-filter
blur pool (`blurpool`) in every part of resdsl: each against its formula written here in numpy, in
torch and ONNX Runtime; ECA's kernel size against timm's; parameters, MACs and state_dict keys;
fmt, graph and the kind slot. tests/specs/eca_blur.rds puts both through the backends' numeric and
TVM tests; timm's ecaresnet50d and resnetblur50 themselves are test_peers.py's."""
from __future__ import annotations

import math
from math import comb

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_block_kinds import NET

import resdsl
from resdsl.backends.graphviz_render import describe
from resdsl.backends.onnx_export import max_opset, to_onnx
from resdsl.formatter import format_source
from resdsl.ops.rules import eca_kernel
from resdsl.stats import layer_stats


def _timm_eca_kernel(channels: int) -> int:
    """timm's EcaModule, as its source computes it (gamma 2, beta 1), in floats."""
    t = int(abs(math.log(channels, 2) + 1) / 2)  # noqa: FURB163 - timm's own expression, its rounding too
    return max(t if t % 2 else t + 1, 3)


def test_eca_kernel_is_timms_for_every_width() -> None:
    assert [eca_kernel(c) for c in (64, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 7]
    assert all(eca_kernel(c) == _timm_eca_kernel(c) for c in range(1, 8193))


# ---- channel_conv: ECA ------------------------------------------------------------------------------
def _eca_net(attn: str) -> resdsl.Network:
    """test_block_kinds' network, its first stage bottleneck(32) (128 channels: ECA's size 5) with `attn`."""
    return resdsl.loads(NET.format(call=f"bottleneck(32, attn={attn})"), "eca.rds")


def _randomized(net: resdsl.Network) -> torch.nn.Module:
    module = net.to_torch(seed=0).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if "running_var" in name:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dtype.is_floating_point:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
    return module


def eca_gate(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """sigmoid of the channel means convolved across the channels, zero-padded by k // 2."""
    k = weight.size
    means = x.astype(np.float64).mean(axis=(2, 3))
    padded = np.pad(means, ((0, 0), (k // 2, k // 2)))
    conv = np.stack([padded[:, i:i + means.shape[1]] for i in range(k)], axis=-1) @ weight.ravel()
    return 1 / (1 + np.exp(-conv))[:, :, None, None]


@pytest.mark.parametrize("attn, kernel", [("eca", 5), ("eca(kernel=3)", 3), ("eca(kernel=7)", 7)])
def test_eca_gates_the_residual_branch_by_its_formula(attn: str, kernel: int) -> None:
    net = _eca_net(attn)
    module = _randomized(net)
    block = module.layer1[0]
    assert tuple(block.se.conv.weight.shape) == (1, 1, kernel)  # timm's se.conv: nn.Conv1d(1, 1, k)
    x = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = torch.relu(block.bn1(block.conv1(x)))
        out = torch.relu(block.bn2(block.conv2(out)))
        branch = block.bn3(block.conv3(out)).numpy()
        want = np.maximum(branch * eca_gate(branch, block.se.conv.weight.numpy()) + block.downsample(x).numpy(), 0)
        np.testing.assert_allclose(block(x).numpy(), want, rtol=1e-5, atol=1e-5)
    layer = net.graph.node("layer1.0.se.conv")
    assert layer.op == "channel_conv" and net.graph.shape("layer1.0.se.conv") == (128, 1, 1)
    stats = {s.name: s for s in layer_stats(net.graph)}["layer1.0.se.conv"]
    assert (stats.params, stats.macs) == (kernel, 128 * kernel)  # ECA's 5 at 128


def test_the_class_writes_ecas_size_in_its_own_terms() -> None:
    source = resdsl.load("specs/ecaresnet50d.rds").torch_source()
    assert source.count("\nclass ") == 2  # one Bottleneck for kernels 5 (layers 1-3) and 7 (layer4)
    assert "kernel_size=max((width * expansion).bit_length() // 2 | 1, 3)" in source
    with torch.device("meta"):
        module = resdsl.load("specs/ecaresnet50d.rds").to_torch()
    assert [module.get_submodule(f"layer{i}.0.se.conv").kernel_size for i in (1, 2, 3, 4)] == [(5,)] * 3 + [(7,)]


# ---- blurpool ---------------------------------------------------------------------------------------
BLUR = """
network blur {{
    input 3x9x11
    stem {{ blur: blurpool {args} }}
    outputs blur
}}
"""
BLURS = [("", 3, 2), ("k4", 4, 2), ("k5 s1", 5, 1), ("k2 s3", 2, 3)]


def blur(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """Zhang 2019 / timm's BlurPool2d: reflect-pad by ((s - 1) + (k - 1)) // 2, then every channel
    convolved with the outer square of C(k-1, i) / 2^(k-1), at stride s."""
    p = (s - 1 + k - 1) // 2
    row = np.array([comb(k - 1, i) for i in range(k)], np.float64) / 2 ** (k - 1)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
    h, w = (padded.shape[2] - k) // s + 1, (padded.shape[3] - k) // s + 1
    out = np.zeros((*x.shape[:2], h, w))
    for i in range(k):
        for j in range(k):
            out += row[i] * row[j] * padded[:, :, i:i + s * (h - 1) + 1:s, j:j + s * (w - 1) + 1:s]
    return out


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 9, 11)).astype(np.float32)


@pytest.mark.parametrize("args, k, s", BLURS)
def test_blurpool_computes_the_formula_with_no_weights(image, args: str, k: int, s: int) -> None:
    net = resdsl.loads(BLUR.format(args=args), "blur.rds")
    want = blur(image, k, s)
    assert net.graph.shape("blur") == want.shape[1:]
    assert net.params == 0 and net.macs == want[0].size * k * k
    module = net.to_torch()
    assert list(module.state_dict()) == [] and list(module.buffers()) == []  # timm's filter is in no key
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(image))["blur"].numpy(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("args, k, s", BLURS)
def test_onnxruntime_blurs_with_a_reflect_pad_and_a_depthwise_conv(image, args: str, k: int, s: int) -> None:
    net = resdsl.loads(BLUR.format(args=args), "blur.rds")
    model = to_onnx(net.graph, {}, opset=max_opset())
    assert [n.op_type for n in model.graph.node] == ["Pad", "Conv", "Identity"]
    assert any(a.name == "mode" and a.s == b"reflect" for a in model.graph.node[0].attribute)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": image})[0], blur(image, k, s), rtol=1e-6, atol=1e-6)


def test_onnxruntime_gates_by_ecas_formula() -> None:
    net = _eca_net("eca")
    module = _randomized(net)
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    model = to_onnx(net.graph, weights)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], want, rtol=1e-5, atol=1e-5)
    convs = [n for n in model.graph.node if n.op_type == "Conv" and "layer1.0.se.conv.weight" in n.input]
    assert len(convs) == 1  # the 1-D conv over (N, 1, C), its weight timm's key


# ---- the slot, fmt, graph ---------------------------------------------------------------------------
def test_a_blur_in_a_kind_slot_is_refused_where_it_changes_the_shape() -> None:
    """A layer kind keeps its slot's shape (specs/resnetblur50.rds hands the slot a block instead)."""
    spec = "block b(w, aa = none) { conv1: conv w k3 p1; aa: aa; add shortcut }\n" + NET.format(
        call="b(32, aa=blurpool)")
    with pytest.raises(resdsl.ResdslError) as caught:
        resdsl.loads(spec, "slot.rds")
    assert "layer kind `blurpool` does not fit `aa: aa`" in caught.value.render()


def test_fmt_writes_the_short_forms_and_keeps_the_network() -> None:
    text = BLUR.format(args="kernel=5 stride=1").replace("outputs blur", "outputs blur\n    ")
    out = format_source(text)
    assert "blur: blurpool k5 s1" in out and format_source(out) == out
    eca = NET.format(call="basic(16)").replace("conv 16 k3 p1 }", "conv 16 k3 p1; avgpool; channel_conv kernel=3 }")
    assert "channel_conv k3" in format_source(eca)


def test_graph_labels_the_filter_and_ecas_size() -> None:
    net = resdsl.load("tests/specs/eca_blur.rds")
    assert [describe(net.graph, n) for n in ("blur", "layer1.0.se.conv", "layer2.0.se.conv", "even")] == [
        "blur\nblur 3x3, /2", "se.conv\nconv1d across C, k3", "se.conv\nconv1d across C, k5", "even\nblur 4x4, /2"]
