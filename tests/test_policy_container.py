"""A policy names the container its layers are keys of (`proj.0`, torchvision's RegNet) and the
block takes and keeps its shortcut under that name (`self.proj = proj`), so torchvision's
state_dict loads; `downsample` stays the name where a policy says nothing else. Checked against a
module written here by hand with torch.nn, the way torchvision's ResBottleneckBlock writes it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import resdsl

POLICY = """
policy conv_bn(channels, stride) {
    proj.0: conv channels s=stride
    proj.1: bn
}
"""

BLOCK = """
block res(out, stride = 1) {
    f.a.0: conv out k3 s=stride p1
    f.a.1: bn
    f.a.2: relu
    f.b.0: conv out k3 p1
    f.b.1: bn
    add shortcut
    relu
}
"""

NET = POLICY + BLOCK + """
network n {
    input 3x16x16
    classes 5
    shortcut conv_bn
    stem { stem.0: conv 8 k3 p1; stem.1: bn; stem.2: relu }
    stage trunk.block1: res(8) x 2 named "block1-{i}"
    stage trunk.block2: res(16) x 2 stride 2 named "block2-{i}"
    head { avgpool; fc: fc classes }
}
"""


class _Res(nn.Module):
    """torchvision's ResBottleneckBlock, cut down: f.a, f.b, and `proj` where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.f = nn.Module()
        self.f.a = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
        self.f.b = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.proj = None
        if c_in != c_out or stride != 1:
            self.proj = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return torch.relu(self.f.b(self.f.a(x)) + shortcut)


def _by_hand() -> nn.Module:
    net = nn.Module()
    net.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    net.trunk = nn.Module()
    net.trunk.block1 = nn.ModuleDict({"block1-0": _Res(8, 8, 1), "block1-1": _Res(8, 8, 1)})
    net.trunk.block2 = nn.ModuleDict({"block2-0": _Res(8, 16, 2), "block2-1": _Res(16, 16, 1)})
    net.fc = nn.Linear(16, 5)
    return net


def _forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.stem(x)
    for stage in (net.trunk.block1, net.trunk.block2):
        for block in stage.values():
            x = block(x)
    return net.fc(x.mean((2, 3)))


def test_the_shortcut_loads_under_the_policys_container() -> None:
    torch.manual_seed(0)
    by_hand = _by_hand().eval()
    net = resdsl.loads(NET, "n.rds")
    module = net.to_torch().eval()
    ours, theirs = module.state_dict(), by_hand.state_dict()
    assert sorted((k, tuple(v.shape)) for k, v in ours.items()) == sorted(
        (k, tuple(v.shape)) for k, v in theirs.items())
    assert "trunk.block2.block2-0.proj.0.weight" in ours and not any("downsample" in k for k in ours)
    module.load_state_dict(theirs, strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(module(x), _forward(by_hand, x), rtol=1e-5, atol=1e-5)
    assert net.params == sum(p.numel() for p in by_hand.parameters())


def test_the_generated_class_takes_and_keeps_it_by_that_name() -> None:
    source = resdsl.loads(NET, "n.rds").torch_source()
    assert "proj: nn.Module | None = None" in source
    assert "        self.proj = proj\n" in source and "        if self.proj is not None:\n" in source
    assert "ResBlock(8, 16, stride=2, proj=conv_bn(8, 16, 2))" in source
    assert "downsample" not in source
    assert source.count("\nclass ") == 2  # one block class still stands for every block


def test_a_block_parameter_of_the_containers_name_gives_way() -> None:
    """A block's own `proj` parameter cannot be the constructor argument the shortcut arrives in."""
    text = NET.replace("block res(out, stride = 1)", "block res(out, stride = 1, proj = 1)")
    net = resdsl.loads(text, "n.rds")
    source = net.torch_source()
    assert "proj_1: int = 1" in source and "proj: nn.Module | None = None" in source
    namespace: dict = {}
    exec(compile(source, "generated.py", "exec"), namespace)  # noqa: S102 - the generated module itself
    assert sum(p.numel() for p in namespace["build"]().parameters()) == net.params


def test_blocks_of_one_definition_under_two_containers_get_two_classes() -> None:
    """`shortcut B` (downsample.0/1) in one stage, the policy (proj.0/1) in the next."""
    text = NET.replace('x 2 named "block1-{i}"', 'x 2 stride 2 named "block1-{i}" shortcut B')
    net = resdsl.loads(text, "n.rds")
    keys = list(net.to_torch(seed=0).state_dict())
    assert "trunk.block1.block1-0.downsample.0.weight" in keys and "trunk.block2.block2-0.proj.0.weight" in keys
    source = net.torch_source()
    assert "downsample=projection(8, 8, stride=2)" in source and "proj=conv_bn(8, 16, 2)" in source
    assert net.to_torch(seed=0).eval()(torch.randn(1, 3, 16, 16)).shape == (1, 5)


def test_an_unlabelled_policy_layer_goes_in_the_container() -> None:
    text = NET.replace("proj.1: bn", "bn")
    keys = list(resdsl.loads(text, "n.rds").to_torch(seed=0).state_dict())
    assert "trunk.block2.block2-0.proj.bn.weight" in keys


@pytest.mark.parametrize(("policy", "message", "column"), [
    ("f.0: conv channels s=stride", "the policy's container `f` is the block's own: it holds `f.a.0`", 5),
    ("self.0: conv channels s=stride", "`self` cannot hold a policy's layers", 5),
    ("proj: conv channels s=stride", "a policy's layers are keys of one container, `downsample.KEY`: not `proj`", 5),
])
def test_a_container_the_block_cannot_take_is_a_located_error(policy: str, message: str, column: int) -> None:
    text = NET.replace("proj.0: conv channels s=stride", policy).replace("proj.1: bn", "bn")
    with pytest.raises(resdsl.ResdslError) as caught:
        resdsl.loads(text, "n.rds")
    found = caught.value.diagnostic
    assert found.message.startswith(message), found.message
    assert (found.span.line, found.span.column) == (3, column)
