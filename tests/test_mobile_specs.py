"""The bundled EfficientNet and MobileNetV3 specs beyond their peer fixtures (test_peers.py):
where their residuals sit, that timm's and torchvision's B0 are one network, and the shared
include of timm's blocks, which the bundled-spec tests cannot load on its own (it has no network)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT

import resdsl
from resdsl import ResdslError
from resdsl.backends.onnx_export import to_onnx
from resdsl.formatter import format_source

SMALL = (3, 64, 64)  # the widths are the fixtures'; a small map keeps each forward fast


def added_in(spec: str) -> list[str]:
    net = resdsl.load(spec)
    return sorted(net.graph.node(n).scope for n in net.graph.nodes_of("add"))


def test_residuals_sit_where_the_block_keeps_its_inputs_shape() -> None:
    """timm's has_skip and torchvision's use_res_connect: stride 1 and out == in. Written from the
    arch definitions (timm's 'ir_r2_k3_s2_e6_c24' ...): every block but a stage's first, and
    MobileNetV3's stride-1, 16 -> 16 first block; no block widening 80 -> 112 or 192 -> 320."""
    efficientnet = ["1.1", "2.1", "3.1", "3.2", "4.1", "4.2", "5.1", "5.2", "5.3"]
    assert added_in("specs/efficientnet_b0.rds") == [f"blocks.{b}" for b in efficientnet]
    assert added_in("specs/tv_efficientnet_b0.rds") == [
        f"features.{int(b[0]) + 1}.{b[2]}" for b in efficientnet]
    mobilenet = ["0.0", "1.1", "2.1", "2.2", "3.1", "3.2", "3.3", "4.1", "5.1", "5.2"]
    assert added_in("specs/mobilenetv3_large_100.rds") == [f"blocks.{b}" for b in mobilenet]


def test_timm_and_torchvision_efficientnet_b0_are_one_network() -> None:
    """The same tensors in the same order under two namings (torchvision's BN eps is PyTorch's
    1e-5 too): with timm's weights copied across, torchvision's computes the same output."""
    timm = resdsl.load("specs/efficientnet_b0.rds", input=SMALL).to_torch(seed=0).eval()
    tv = resdsl.load("specs/tv_efficientnet_b0.rds", input=SMALL).to_torch(seed=1).eval()
    ours, theirs = timm.state_dict(), tv.state_dict()
    assert [t.shape for t in ours.values()] == [t.shape for t in theirs.values()]
    tv.load_state_dict(dict(zip(theirs, ours.values())), strict=True)
    x = torch.randn(2, *SMALL, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(tv(x), timm(x), rtol=1e-5, atol=1e-6)


def test_onnxruntime_computes_mobilenetv3_as_torch_does() -> None:
    """hard-swish, ReLU and the hard-sigmoid gate (PyTorch's slope, not ONNX's default) in ORT."""
    net = resdsl.load("specs/mobilenetv3_large_100.rds", input=SMALL)
    module = net.to_torch(seed=0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in module.state_dict().items():  # BN statistics far from the identity
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", ".bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        x = torch.randn(1, *SMALL, generator=g)
        want = module(x).numpy()
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    session = ort.InferenceSession(to_onnx(net.graph, weights).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_the_shared_timm_blocks_are_formatted_and_lex_cleanly() -> None:
    from pygments.token import Error

    from resdsl.highlight import RdsLexer
    path = ROOT / "specs" / "blocks" / "timm_efficientnet.rds"
    text = path.read_text()
    assert format_source(text, str(path)) == text
    assert not any(t is Error for t, _ in RdsLexer().get_tokens(text))


def test_a_fractional_expansion_written_as_a_float_is_located_in_the_block_it_breaks() -> None:
    """timm's e2.3 (blocks.3.2-3 of MobileNetV3) as `in_channels * 2.3` is 184.0, not a width: the
    error points at the include's conv and names the first block it breaks and its stage."""
    text = (ROOT / "specs" / "mobilenetv3_large_100.rds").read_text()
    line = "mid=in_channels * 23 / 10"
    assert line in text
    with pytest.raises(ResdslError) as caught:
        resdsl.loads(text.replace(line, "mid=in_channels * 2.3"), "mnv3.rds", ROOT / "specs")
    diagnostic = caught.value.diagnostic
    assert diagnostic.message == "`out` of `conv` must be an integer, not 184.0"
    assert diagnostic.span.source_line().strip() == "conv_pw: conv mid"
    assert any(note.startswith("in block blocks.3.2 (`inverted`) of stage `blocks.3`") for note, _ in diagnostic.notes)
