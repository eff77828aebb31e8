"""One namespace, one suffix rule: labels, the generated PyTorch's names and ONNX values."""
from __future__ import annotations

import torch

import resdsl
from resdsl.naming import Namespace

ODD_NAMES = """
block odd(in_channels, width) {
    x_: conv width k3 p1
    x: branch { conv width k3 p1 }
    add x
    add shortcut; relu
}
network tensor {
    input 3x16x16
    classes 5
    stem { conv1: conv 8 k3 p1 }
    stage layer1: odd(1, 8) x 2
    head { avgpool; fc classes }
}
"""


def test_a_candidate_is_itself_while_free_then_takes_the_first_free_suffix_from_1() -> None:
    names = Namespace(reserved={"x"}, taken={"relu_2"})
    made = [names.create_name(c) for c in ("relu", "relu", "relu", "relu", "x", "relu_1")]
    assert made == ["relu", "relu_1", "relu_3", "relu_4", "x_1", "relu_1_1"]
    assert "relu_2" in names and "x" in names and "relu_5" not in names


def test_a_namespace_of_identifiers_makes_a_name_safe_before_unique() -> None:
    names = Namespace(reserved={"self", "x"}, identifiers=True)
    made = [names.create_name(c) for c in ("se.fc1", "se_fc1", "self", "self", "0.conv", "x", "")]
    assert made == ["se_fc1", "se_fc1_1", "self_", "self__1", "_0_conv", "x_", "_"]
    assert all(n.isidentifier() for n in made)


def test_labels_are_never_rewritten_only_suffixed() -> None:
    labels = Namespace()
    assert [labels.create_name(c) for c in ("se.relu", "se.relu", "self")] == ["se.relu", "se.relu_1", "self"]


def test_generated_names_that_collide_take_the_one_rule_and_the_module_runs() -> None:
    from resdsl.backends.torch_codegen import generate
    net = resdsl.loads(ODD_NAMES)
    source = generate(net.graph)
    # `in_channels` is the block's own parameter, so the channels handed in take `_1`; `Tensor`
    # is the module's import, so the class takes a trailing `_`.
    assert "def __init__(self, in_channels_1: int, in_channels: int, width: int) -> None:" in source
    assert "class Tensor_(nn.Module):" in source and "OddBlock(8, 1, 8)" in source
    model = net.to_torch(seed=0).eval()
    assert sum(p.numel() for p in model.parameters()) == net.params
    assert list(model.state_dict())[:3] == ["conv1.weight", "layer1.0.x_.weight", "layer1.0.x.conv.weight"]
    assert tuple(model(torch.randn(2, 3, 16, 16)).shape) == (2, 5)
