"""How a stage names its blocks (issue #31's naming control): numbered on in a container that stem
and head layers share (torchvision's flat `features.N`), keyed by a pattern (`named "b{i + 1}"`,
timm's RegNet; `named "block1-{i}"`, torchvision's), or one block named by the stage's label
(`stage inception3a: ...`), whose layers may be keyed by position (`0: conv`). The state_dicts
are checked against modules written here by hand with torch.nn, the way torchvision writes them."""
from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from torch import nn

import resdsl
from resdsl.backends.onnx_export import to_onnx
from resdsl.formatter import format_source

INVERTED = """
block inverted(out, expand = 6, stride = 1) {
    let hidden = in_channels * expand
    conv.0.0: conv hidden k1; conv.0.1: bn; conv.0.2: relu6
    conv.1.0: conv hidden k3 s=stride p1 g=hidden; conv.1.1: bn; conv.1.2: relu6
    conv.2: conv out k1
    conv.3: bn
    add shortcut
}
"""

FLAT = INVERTED + """
network flat {
    input 3x32x32
    classes 10
    shortcut identity_or_none
    stem { features.0.0: conv 16 k3 s2 p1; features.0.1: bn; features.0.2: relu6 }
    stage features: inverted(24) x 2 stride 2
    stage features: inverted(32) x 3 stride 2
    head {
        features.6.0: conv 64 k1; features.6.1: bn; features.6.2: relu6
        avgpool; classifier.0: dropout 0.2; classifier.1: fc classes
    }
}
"""


def _conv_bn_relu6(c_in: int, c_out: int, k: int = 1, s: int = 1, g: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU6())


class _Inverted(nn.Module):
    """torchvision's InvertedResidual, as its state_dict names it."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * 6
        self.residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(_conv_bn_relu6(c_in, hidden), _conv_bn_relu6(hidden, hidden, 3, stride, hidden),
                                  nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def _flat_by_hand() -> nn.Module:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                _conv_bn_relu6(3, 16, 3, 2), _Inverted(16, 24, 2), _Inverted(24, 24, 1), _Inverted(24, 32, 2),
                _Inverted(32, 32, 1), _Inverted(32, 32, 1), _conv_bn_relu6(32, 64))
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x).mean((2, 3)))
    return Flat()


def _same_state(generated: nn.Module, by_hand: nn.Module) -> None:
    """Same keys, shapes and order; then by_hand's weights load into generated with strict=True."""
    ours, theirs = generated.state_dict(), by_hand.state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == [(k, tuple(v.shape)) for k, v in theirs.items()]
    generated.load_state_dict(theirs, strict=True)


def test_stages_number_on_in_a_container_the_stem_and_head_share() -> None:
    """torchvision's MobileNetV2: `features.0` the stem, `features.1-5` the blocks of two stages,
    `features.6` the last conv, one nn.Sequential of them all."""
    torch.manual_seed(0)
    by_hand, net = _flat_by_hand().eval(), resdsl.loads(FLAT, "flat.rds")
    generated = net.to_torch().eval()
    _same_state(generated, by_hand)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(generated(x), by_hand(x), rtol=1e-5, atol=1e-5)
    source = net.torch_source()
    assert "        x = self.features(x)\n" in source  # nested, not a ModuleDict reached key by key
    assert net.summary()  # the shared container is one stage


def test_a_pattern_keys_the_blocks() -> None:
    """timm's RegNet (`s1.b1`) and torchvision's (`trunk_output.block1.block1-0`); renaming changes
    the keys and nothing else."""
    base = INVERTED + """
network keyed {
    input 3x16x16
    classes 5
    shortcut identity_or_none
    stem { conv1: conv 8 k3 p1; bn1: bn; relu }
    stage STAGE: inverted(8) x 3
    head { avgpool; fc classes }
}
"""
    plain = resdsl.loads(base.replace("STAGE", "s1"), "keyed.rds").to_torch(seed=0).eval()
    x = torch.randn(1, 3, 16, 16)
    for stage, pattern, keys in [
        ("s1", "b{i + 1}", ["s1.b1", "s1.b2", "s1.b3"]),
        ("trunk_output.block1", "block1-{i}", ["trunk_output.block1.block1-0", "trunk_output.block1.block1-1",
                                               "trunk_output.block1.block1-2"]),
    ]:
        text = base.replace("STAGE", stage).replace("x 3", f'x 3 named "{pattern}"')
        module = resdsl.loads(text, "keyed.rds").to_torch().eval()
        state = module.state_dict()
        assert [k for k in state if k.endswith("conv.2.weight")] == [f"{key}.conv.2.weight" for key in keys]
        module.load_state_dict(dict(zip(state, plain.state_dict().values())), strict=True)  # same order
        torch.testing.assert_close(module(x), plain(x))


SINGLE = """
block transition(out) {
    0: bn
    1: relu
    2: conv out k1
    3: avgpool k2 s2
}
network single {
    input 3x16x16
    outputs features.transition1, features.1
    stem { features.0: conv 8 k3 p1 }
    stage features.transition1: transition(6)
    stage features: inverted(6, expand=2) x 1
}
"""


def test_a_stage_of_one_block_is_named_by_its_label() -> None:
    """DenseNet's `features.transition1`, its layers keyed by position (`0: bn`), as the
    nn.Sequential torchvision's _Transition subclasses; and `outputs` naming one block."""
    net = resdsl.loads(INVERTED + SINGLE, "single.rds")
    module = net.to_torch(seed=0).eval()
    keys = list(module.state_dict())
    assert keys[:6] == ["features.0.weight", "features.transition1.0.weight", "features.transition1.0.bias",
                        "features.transition1.0.running_mean", "features.transition1.0.running_var",
                        "features.transition1.0.num_batches_tracked"]
    assert "features.transition1.2.weight" in keys and "features.1.conv.0.0.weight" in keys
    x = torch.randn(2, 3, 16, 16)
    out = module(x)
    state, t = module.state_dict(), "features.transition1."
    stem = nn.functional.conv2d(x, state["features.0.weight"], padding=1)
    bn = nn.functional.batch_norm(stem, state[t + "0.running_mean"], state[t + "0.running_var"],
                                  state[t + "0.weight"], state[t + "0.bias"])
    expected = nn.functional.avg_pool2d(nn.functional.conv2d(torch.relu(bn), state[t + "2.weight"]), 2)
    torch.testing.assert_close(out["features.transition1"], expected, rtol=1e-5, atol=1e-5)
    assert out["features.1"].shape == (2, 6, 8, 8)
    assert 'self.add_module("0", nn.BatchNorm2d(' in net.torch_source()


def test_onnx_keeps_the_keys_and_the_numbers() -> None:
    """A hyphenated key through ONNX: ONNX Runtime computes what torch does."""
    text = FLAT.replace("stage features: inverted(24) x 2 stride 2",
                        'stage trunk.block1: inverted(24) x 2 stride 2 named "block1-{i}"')
    text = text.replace("features.6.", "features.4.")  # features.1-3 now the second stage's
    net = resdsl.loads(text, "flat.rds")
    module = net.to_torch(seed=0).eval()
    assert "trunk.block1.block1-1.conv.2.weight" in module.state_dict()
    model = to_onnx(net.graph, {k: v.numpy() for k, v in module.state_dict().items()})
    x = torch.randn(1, 3, 32, 32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), module(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("text", [FLAT, INVERTED + SINGLE])
def test_fmt_keeps_patterns_and_single_block_stages(text: str) -> None:
    once = format_source(text, "x.rds")
    assert format_source(once, "x.rds") == once
    assert resdsl.loads(once, "x.rds").params == resdsl.loads(text, "x.rds").params


FIRE = """
block fire(squeeze, expand) {
    squeeze: conv squeeze k1 bias=1
    s: relu
    branch s { expand1x1: conv expand k1 bias=1; e1: relu }
    branch s { expand3x3: conv expand k3 p1 bias=1; e3: relu }
    concat e1 e3
}
network fire {
    input 8x6x6
    outputs fire2
    stage fire2: fire(4, 5)
}
"""


def test_an_unlabeled_branch_names_its_layers_as_the_blocks_own() -> None:
    """SqueezeNet's Fire: expand1x1 and expand3x3 side by side in the block's own module, each
    read from the squeeze; the value of the first path is kept while the second runs."""
    net = resdsl.loads(FIRE, "fire.rds")
    module = net.to_torch(seed=0).eval()
    state = module.state_dict()
    assert list(state) == [f"fire2.{layer}.{p}" for layer in ("squeeze", "expand1x1", "expand3x3")
                           for p in ("weight", "bias")]
    x = torch.randn(2, 8, 6, 6)
    f = nn.functional
    s = torch.relu(f.conv2d(x, state["fire2.squeeze.weight"], state["fire2.squeeze.bias"]))
    expected = torch.cat([torch.relu(f.conv2d(s, state["fire2.expand1x1.weight"], state["fire2.expand1x1.bias"])),
                          torch.relu(f.conv2d(s, state["fire2.expand3x3.weight"], state["fire2.expand3x3.bias"],
                                              padding=1))], 1)
    torch.testing.assert_close(module(x)["fire2"], expected)
    once = format_source(FIRE, "fire.rds")
    assert "    branch s {\n" in once and format_source(once, "fire.rds") == once


def test_a_scale_at_a_position_or_beside_one_is_a_parameter_there() -> None:
    """A layer scale keyed by a number (`1: scale`) or in a container keyed by numbers
    (`x.ls: scale` beside `x.0`): registered as a parameter where an nn.ModuleDict or an attribute
    cannot hold one."""
    text = """
block b(w) {
    0: conv w k1
    1: scale
    x.0: conv w k1
    x.ls: scale dims=3
}
network n { input 4x8x8; classes 3; stem { conv 4 k3 p1 }; stage a: b(4); head { avgpool; fc classes } }
"""
    net = resdsl.loads(text, "scale.rds")
    module = net.to_torch(seed=0).eval()
    state = module.state_dict()
    assert tuple(state["a.1"].shape) == (4,) and tuple(state["a.x.ls"].shape) == (4, 1, 1)
    x = torch.randn(2, 4, 8, 8)
    f = nn.functional
    h = f.conv2d(f.conv2d(x, state["conv.weight"], padding=1), state["a.0.weight"]) * state["a.1"].view(-1, 1, 1)
    h = f.conv2d(h, state["a.x.0.weight"]) * state["a.x.ls"]
    torch.testing.assert_close(module(x), h.mean((2, 3)) @ state["fc.weight"].T + state["fc.bias"])
