"""Layer kinds as block parameters (`block basic(width, stride = 1, act = relu, norm = bn)`, used
as `basic(16, act=silu)`): the network a kind argument makes is the one written out by hand, in
PyTorch and ONNX, and the generated class takes the kind as timm's blocks do (`act_layer=`)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT
from test_onnx_backend import randomize_bn, rel_err

import resdsl
from resdsl import ResdslError
from resdsl.backends.onnx_export import to_onnx
from resdsl.formatter import format_source

NET = """
network n {{
    input 3x16x16
    classes 10
    stem {{ conv1: conv 16 k3 p1 }}
    stage layer1: {call} x 2
    head {{ avgpool; fc classes }}
}}
"""

# The prelude's `basic` with SiLU written into it: what `basic(16, act=silu)` must make.
BASIC_SILU = """
block basic_silu(width, stride = 1) {
    conv1: conv width k3 s=stride p1
    bn1: bn
    act1: silu
    conv2: conv width k3 p1
    bn2: bn
    add shortcut
    act2: silu
}
"""

SILU_RESNET = ROOT / "tests" / "kinds" / "silu_resnet.rds"


def _net(call: str, prefix: str = "", **kwargs) -> resdsl.Network:
    return resdsl.loads(prefix + NET.format(call=call), "kinds.rds", **kwargs)


def test_a_kind_argument_makes_the_network_written_out() -> None:
    given, written = _net("basic(16, act=silu)"), _net("basic_silu(16)", BASIC_SILU)
    assert (given.params, given.macs) == (written.params, written.macs)
    a, b = given.to_torch(seed=0).eval(), written.to_torch(seed=0).eval()
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        relu = _net("basic(16)").to_torch(seed=0).eval()
        relu.load_state_dict(a.state_dict())
        assert not torch.allclose(relu(x), a(x))  # the kind changed what the network computes
    assert sum(isinstance(m, torch.nn.SiLU) for m in a.modules()) == 4
    assert not any(isinstance(m, torch.nn.ReLU) for m in a.modules())
    # One class for the definition, taking the kind as timm's blocks do.
    source = given.torch_source()
    assert "act_layer: type[nn.Module] = nn.ReLU" in source and "act_layer=nn.SiLU" in source
    assert "self.act1 = act_layer(inplace=True)" in source


def test_a_spec_that_changes_no_kind_gets_no_kind_arguments() -> None:
    assert "_layer" not in _net("basic(16)").torch_source()


def test_none_leaves_the_layer_out() -> None:
    with_bn, without = _net("basic(16)"), _net("basic(16, norm=none)")
    removed = set(with_bn.to_torch(seed=0).state_dict()) - set(without.to_torch(seed=0).state_dict())
    assert removed == {f"layer1.{i}.bn{j}.{key}" for i in (0, 1) for j in (1, 2)
                       for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert with_bn.params - without.params == 2 * 2 * 2 * 16  # two BNs of 16 channels per block, scale and shift
    assert "BatchNorm2d" not in without.torch_source().split("class N(")[0]


def test_kinds_differing_between_stages_share_one_class() -> None:
    # GELU has no in-place form, so the class calls its kind without `inplace=True`.
    net = resdsl.loads(NET.format(call="basic(16, act=silu)").replace(
        "    head", "    stage layer2: basic(16, act=gelu) x 1\n    head"), "mixed.rds")
    source = net.torch_source()
    assert source.count("class BasicBlock") == 1 and "self.act1 = act_layer()" in source
    assert "act_layer=nn.SiLU" in source and "act_layer=nn.GELU" in source
    model = net.to_torch(seed=0)
    kinds = [type(m).__name__ for name, m in model.named_modules() if name.endswith("act1")]
    assert kinds == ["SiLU", "SiLU", "GELU"]
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_a_kind_parameter_may_default_to_another() -> None:
    block = """
block two(width, act = relu, last = act) {
    conv1: conv width k3 p1
    act1: act
    add shortcut
    act2: last
}
"""
    net = resdsl.loads(block + NET.format(call="two(16, act=silu)").replace(
        "    head", "    stage layer2: two(16, last=gelu) x 1\n    head"), "chain.rds")
    assert "if last_layer is None:\n            last_layer = act_layer" in net.torch_source()
    model = net.to_torch(seed=0)
    kinds = {name: type(m).__name__ for name, m in model.named_modules() if ".act" in name}
    assert kinds == {"layer1.0.act1": "SiLU", "layer1.0.act2": "SiLU", "layer1.1.act1": "SiLU",
                     "layer1.1.act2": "SiLU", "layer2.0.act1": "ReLU", "layer2.0.act2": "GELU"}


def test_set_swaps_a_network_constant_kind_everywhere() -> None:
    net = resdsl.load(SILU_RESNET, {"act": "gelu"})
    model = net.to_torch(seed=0)
    acts = [type(m).__name__ for name, m in model.named_modules() if name.rpartition(".")[2].startswith("act")]
    assert acts and set(acts) == {"GELU"}
    with pytest.raises(ResdslError, match="`act` is 3 here, a number, not a layer kind"):
        resdsl.load(SILU_RESNET, {"act": "3"})


def test_onnxruntime_computes_what_torch_does_with_kinds() -> None:
    net = resdsl.load(SILU_RESNET)
    model = net.to_torch(seed=0).eval()
    randomize_bn(model, net.graph.shape("<input>"))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    session = ort.InferenceSession(to_onnx(net.graph, weights).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    assert rel_err(session.run(None, {"input": x})[0], expected) < 1e-4


def test_the_kinds_spec_formats_to_itself() -> None:
    text = SILU_RESNET.read_text()
    assert format_source(text, str(SILU_RESNET)) == text
