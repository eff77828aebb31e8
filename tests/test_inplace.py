"""In-place activations in generated PyTorch never overwrite a value forward still needs: a named
output (`outputs["stem_bn"] = x` holds the tensor itself), or one another layer reads later."""
from __future__ import annotations

import copy

import torch

import resdsl

# A named output read by an in-place-capable relu, in the stem and after a stage.
SPEC = """
network inplace_outputs {
    input 3x8x8
    classes 4
    outputs stem_bn, layer1, logits
    stem { conv1: conv 4 k3 p1; stem_bn: bn; stem_act: relu }
    stage layer1: basic(4) x 1
    head { head_act: relu; avgpool; logits: fc classes }
}
"""

# A block whose first layer, an activation, is the only reader of its input: that input is a
# named output (layer1's) for layer2.0 only, yet all four blocks are one class.
PLAIN = """
block plain(c) { act: relu; conv1: conv c k3 p1 }
network plain_outputs {
    input 3x8x8
    outputs layer1, layer2
    stem { conv1: conv 4 k3 p1 }
    stage layer1: plain(4) x 2
    stage layer2: plain(4) x 2
}
"""


def run_both(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict, dict]:
    """`model`'s outputs, and those of a copy (the same weights) whose every layer writes a new
    tensor."""
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    with torch.no_grad():
        return model(x), reference(x)


def test_named_outputs_equal_the_network_run_without_in_place_layers() -> None:
    model = resdsl.loads(SPEC).to_torch(seed=0).eval()
    x = torch.randn(2, 3, 8, 8)
    got, want = run_both(model, x)
    assert list(got) == ["stem_bn", "layer1", "logits"]
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
    assert (got["stem_bn"] < 0).any()  # a batch norm's output, not a relu's
    # Computed apart from the generated forward: conv then batch norm with the module's weights.
    conv, bn = model.conv1, model.stem_bn
    expected = torch.nn.functional.batch_norm(
        torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1),
        bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
    torch.testing.assert_close(got["stem_bn"], expected)


def test_a_stage_output_read_by_the_next_blocks_first_activation() -> None:
    net = resdsl.loads(PLAIN)
    assert net.torch_source().count("(nn.Module):") == 2  # PlainBlock and the network's class
    got, want = run_both(net.to_torch(seed=0).eval(), torch.randn(2, 3, 8, 8))
    assert list(got) == ["layer1", "layer2"]
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
    assert (got["layer1"] < 0).any()  # a conv's output, not the next block's relu
