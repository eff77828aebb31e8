"""`in_channels`: a block's expressions may read the channels of its input, as MobileNetV2's
inverted residual expands them (`let hidden = in_channels * expand`) and EfficientNet's SE
squeezes by them; the generated class computes it from its own `in_channels`."""
from __future__ import annotations

import pytest
import torch

import resdsl
from resdsl import ResdslError

INVERTED = """
block inverted(out, stride = 1, expand = 6) {
    let hidden = in_channels * expand
    conv1: conv hidden; bn1: bn; relu6
    conv2: conv hidden k3 s=stride p1 g=hidden; bn2: bn; relu6
    conv3: conv out; bn3: bn
    add shortcut
}
network mb {
    input 3x32x32
    classes 10
    stem { conv1: conv 16 k3 s2 p1; bn1: bn; relu6 }
    stage layer1: inverted(24, expand=1) x 1
    stage layer2: inverted(32) x 2 stride 2
    head { avgpool; fc classes }
}
"""


def _inverted_params(c_in: int, out: int, expand: int) -> int:
    hidden = c_in * expand
    projection = c_in * out + 2 * out if c_in != out else 0
    return c_in * hidden + 2 * hidden + 9 * hidden + 2 * hidden + hidden * out + 2 * out + projection


def test_an_inverted_residual_expands_its_input_channels() -> None:
    net = resdsl.loads(INVERTED, "mb.rds")
    stem, head = 3 * 16 * 9 + 2 * 16, 32 * 10 + 10
    blocks = _inverted_params(16, 24, 1) + _inverted_params(24, 32, 6) + _inverted_params(32, 32, 6)
    assert net.params == stem + blocks + head == 27_802
    state = net.to_torch().state_dict()
    assert tuple(state["layer2.0.conv1.weight"].shape) == (144, 24, 1, 1)  # 24 in, expanded 6x
    assert tuple(state["layer2.1.conv2.weight"].shape) == (192, 1, 3, 3)  # depthwise on 32 * 6


def test_the_generated_class_computes_it_from_its_own_in_channels() -> None:
    source = resdsl.loads(INVERTED, "mb.rds").torch_source()
    assert source.count("\nclass ") == 2 and "        hidden = in_channels * expand\n" in source
    module = resdsl.loads(INVERTED, "mb.rds").to_torch(seed=0).eval()
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_an_inlined_block_reads_the_enclosing_blocks_input_channels() -> None:
    """EfficientNet's SE squeezes the expanded channels to a quarter of the block's input's."""
    text = INVERTED.replace("    add shortcut\n", "    add shortcut\n", 1).replace(
        "conv2: conv hidden k3 s=stride p1 g=hidden; bn2: bn; relu6",
        "conv2: conv hidden k3 s=stride p1 g=hidden; bn2: bn; relu6\n    se: attn hidden").replace(
        "block inverted(out, stride = 1, expand = 6) {", "block inverted(out, stride = 1, expand = 6, attn = none) {"
    ).replace("inverted(32) x 2", "inverted(32, attn=squeeze) x 2").replace("inverted(24, expand=1)",
                                                                             "inverted(24, expand=1, attn=squeeze)")
    text = ("block squeeze(channels) { avgpool; fc1: conv in_channels // 4 bias=1; silu; "
            "fc2: conv channels bias=1; sigmoid; mul input }\n" + text)
    state = resdsl.loads(text, "mb.rds").to_torch().state_dict()
    assert tuple(state["layer2.0.se.fc1.weight"].shape) == (24 // 4, 144, 1, 1)
    assert tuple(state["layer2.1.se.fc1.weight"].shape) == (32 // 4, 192, 1, 1)
    source = resdsl.loads(text, "mb.rds").torch_source()
    assert source.count("\nclass ") == 2  # one class for the three blocks, written in its parameters
    assert "self.se.fc1 = nn.Conv2d(hidden, in_channels // 4, kernel_size=1)" in source


def test_in_channels_of_a_flat_vector_is_a_located_error() -> None:
    text = INVERTED.replace("stem { conv1: conv 16 k3 s2 p1; bn1: bn; relu6 }",
                            "stem { conv1: conv 16 k3 s2 p1; bn1: bn; relu6; avgpool; flatten }")
    with pytest.raises(ResdslError) as caught:
        resdsl.loads(text, "mb.rds")
    assert "`in_channels` reads a feature map's channels" in caught.value.diagnostic.message
    assert caught.value.diagnostic.span.source_line().strip().startswith("stage layer1:")


def test_identity_or_none_adds_the_shortcut_only_where_the_shapes_agree() -> None:
    """MobileNetV2's inverted residual: `use_res_connect` where stride 1 and the widths agree."""
    text = INVERTED.replace("network mb {", "network mb {\n    shortcut identity_or_none")
    net = resdsl.loads(text, "mb.rds")
    assert [net.graph.node(n).scope for n in net.graph.nodes_of("add")] == ["layer2.1"]
    no_projections = 27_802 - (16 * 24 + 2 * 24) - (24 * 32 + 2 * 32)
    assert net.params == no_projections
    module = net.to_torch(seed=0).eval()
    x = torch.randn(1, 24, 16, 16, generator=torch.Generator().manual_seed(0))

    def branch(block, h):
        h = block.relu6(block.bn1(block.conv1(h)))
        return block.bn3(block.conv3(block.relu6_1(block.bn2(block.conv2(h)))))

    with torch.no_grad():
        first, second = module.layer2
        torch.testing.assert_close(first(x), branch(first, x))  # 24 -> 32 at stride 2: no add
        y = first(x)
        torch.testing.assert_close(second(y), branch(second, y) + y)
    # One class for blocks with and without the add, as torchvision's InvertedResidual with its
    # use_res_connect: the add behind a flag the network passes where it is left out.
    source = net.torch_source()
    assert source.count("\nclass ") == 2
    assert "        if self.residual:\n            out += x\n" in source
    assert source.count("residual=False") == 2  # layer1.0 (16 -> 24) and layer2.0 (24 -> 32)


def test_a_parameters_default_may_read_in_channels() -> None:
    """`mid = in_channels * expand` as a default (timm's InvertedResidual computes mid_chs from
    in_chs): one class, which works the default out from its own in_channels."""
    text = INVERTED.replace("block inverted(out, stride = 1, expand = 6) {\n    let hidden = in_channels * expand",
                            "block inverted(out, stride = 1, expand = 6, hidden = in_channels * expand) {")
    net, reference = resdsl.loads(text, "mb.rds"), resdsl.loads(INVERTED, "mb.rds")
    assert net.params == reference.params
    source = net.torch_source()
    assert source.count("\nclass ") == 2 and "            hidden = in_channels * expand\n" in source
    module = net.to_torch(seed=0).eval()
    module.load_state_dict(reference.to_torch(seed=1).state_dict())
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(module(x), reference.to_torch(seed=1).eval()(x))
