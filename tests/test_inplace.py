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


def test_named_outputs_equal_the_network_run_without_in_place_layers() -> None:
    model = resdsl.loads(SPEC).to_torch(seed=0).eval()
    reference = copy.deepcopy(model)
    for module in reference.modules():  # the same weights, every layer writing a new tensor
        if hasattr(module, "inplace"):
            module.inplace = False
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        got, want = model(x), reference(x)
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
