"""Blocks as layer kinds: `bottleneck(64, attn=se)` inlines the prelude's `se` block where the
bottleneck's `attn` slot stands (timm's `attn_layer=`), and `attn=se(reduction=4)` gives it
arguments (timm's `partial(SEModule, rd_ratio=0.25)`). The bundled SE nets reproduce timm's
exactly through this (tests/test_peers.py); here: an independent computation, the generated
class, and the errors."""
from __future__ import annotations

import pytest
import torch

import resdsl
from resdsl import ResdslError
from resdsl.formatter import format_source

NET = """
network n {{
    input 3x16x16
    classes 10
    shortcut B
    stem {{ conv1: conv 16 k3 p1 }}
    stage layer1: {call} x 2
    stage layer2: bottleneck(8, attn=se) x 1 stride 2
    head {{ avgpool; fc classes }}
}}
"""


def _net(call: str, extra: str = "") -> resdsl.Network:
    return resdsl.loads(extra + NET.format(call=call), "n.rds")


def test_se_gates_the_residual_branch_before_the_add() -> None:
    """The block against the same weights applied by hand: x + bn3 * sigmoid(fc2(relu(fc1(mean bn3))))."""
    module = _net("bottleneck(4, attn=se(reduction=4))").to_torch(seed=0).eval()
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if "running_var" in name:
                p.uniform_(0.5, 1.5)
            elif p.dtype.is_floating_point:
                p.normal_(0, 0.3)
    block = module.layer1[1]
    x = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = torch.relu(block.bn1(block.conv1(x)))
        out = torch.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
        s = block.se
        gate = torch.sigmoid(s.fc2(torch.relu(s.fc1(out.mean((2, 3), keepdim=True)))))
        want = torch.relu(out * gate + x)
        torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5)
    assert tuple(block.se.fc1.weight.shape) == (16 // 4, 16, 1, 1)


def test_attn_none_is_the_plain_bottleneck() -> None:
    plain, default = _net("bottleneck(4, attn=none)"), _net("bottleneck(4)")
    assert plain.params == default.params
    assert not any(".se." in k for k in plain.to_torch().state_dict() if k.startswith("layer1"))


def test_the_class_computes_the_inlined_widths_from_its_own_parameters() -> None:
    source = resdsl.load("specs/seresnet50.rds").torch_source()
    assert source.count("\nclass ") == 2  # the bottleneck (16 blocks, one class) and the network
    assert "self.se.fc1 = nn.Conv2d(width * expansion, width * expansion // 16, kernel_size=1)" in source
    rs = resdsl.load("specs/resnetrs50.rds").torch_source()
    assert "width * expansion // 4, kernel_size=1)" in rs


def test_fmt_keeps_a_partial_block_argument() -> None:
    text = NET.format(call="bottleneck(4, attn=se(reduction=4))")
    assert "attn=se(reduction=4)" in format_source(text, "n.rds")
    assert format_source(format_source(text, "n.rds"), "n.rds") == format_source(text, "n.rds")


@pytest.mark.parametrize("call, extra, message", [
    ("bottleneck(4, attn=sx)", "", "unknown layer kind `sx`"),
    ("bottleneck(4, attn=se(reductio=4))", "", "block `se` has no parameter `reductio`"),
    ("bottleneck(4, attn=sf(reduction=4))", "", "unknown block `sf`"),
    ("bottleneck(4, width_per_group=se(reduction=4))", "",
     "`width_per_group` of block `bottleneck` takes a number, not a block"),
    ("b(4)", "block b(w, attn = se) { conv1: conv w; add shortcut }\n", "the default of `attn` names block `se`"),
    ("b(4, attn=loop(attn=loop))", ("block b(w, attn = none) { conv1: conv w; x: attn w; add shortcut }\n"
                                    "block loop(c, attn = none) { conv1: conv c; y: attn c }\n"),
     "block `loop` would contain itself"),
    ("b(4, attn=se(reduction=2))", "block b(w, attn = none) { conv1: conv w k3 p1; f: branch { relu }; s: attn w; concat f conv1 }\n",
     "the value of `s` is never used"),
    ("b(4, attn=sc)", ("block b(w, attn = none) { conv1: conv w k3 p1; x: attn w; add shortcut }\n"
                       "block sc(c) { conv1: conv c; add shortcut }\n"),
     "block `sc`, used here as a layer, has no shortcut of its own"),
])
def test_bad_block_kinds_are_located_errors(call: str, extra: str, message: str) -> None:
    with pytest.raises(ResdslError) as caught:
        _net(call, extra)
    assert message in caught.value.diagnostic.message
    assert caught.value.diagnostic.span is not None
    if "never used" in message:  # at the slot the user wrote, not inside the prelude's `se`
        assert caught.value.diagnostic.span.source_line().strip().startswith("block b(")
