"""`shortcut none`: the plain baselines of He et al. 2015 (Fig. 3, Fig. 6) are the residual networks
with every shortcut left out, written with the same blocks."""
from __future__ import annotations

from pathlib import Path

import pytest

import resdsl

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent


def test_plain20_is_resnet20_without_its_adds() -> None:
    plain, residual = resdsl.load(ROOT / "specs/cifar/plain20.rds"), resdsl.load(ROOT / "specs/cifar/resnet20.rds")
    assert plain.params == residual.params == 269_722  # option A's shortcuts hold no parameters
    assert not list(plain.graph.nodes_of("add")) and len(list(residual.graph.nodes_of("add"))) == 9
    assert not list(plain.graph.nodes_of("pad"))


def test_plain20_computes_the_residual_blocks_without_their_identity() -> None:
    """Plain-20 with ResNet-20's weights against ResNet-20's own layers applied by hand, shortcut skipped."""
    plain = resdsl.load(ROOT / "specs/cifar/plain20.rds").to_torch(seed=0).eval()
    residual = resdsl.load(ROOT / "specs/cifar/resnet20.rds").to_torch(seed=1).eval()
    plain.load_state_dict(residual.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    relu = torch.relu
    with torch.no_grad():
        h = relu(residual.bn1(residual.conv1(x)))
        for stage in (residual.layer1, residual.layer2, residual.layer3):
            for block in stage:
                h = relu(block.bn2(block.conv2(relu(block.bn1(block.conv1(h))))))
        want = residual.fc(torch.flatten(residual.avgpool(h), 1))
        torch.testing.assert_close(plain(x), want, rtol=1e-5, atol=1e-5)


def test_plain18_has_resnet18s_parameters_less_its_projections() -> None:
    plain, residual = resdsl.load(ROOT / "specs/plain18.rds"), resdsl.load(ROOT / "specs/resnet18.rds")
    projections = sum(c * 2 * c + 2 * 2 * c for c in (64, 128, 256))  # 1x1 conv c -> 2c and its BN
    assert residual.params - plain.params == projections
    assert plain.params == 11_515_688


SPEC = """
network mixed {
    input 3x16x16
    classes 4
    shortcut none
    stem { conv1: conv 8 k3 p1; bn1: bn; relu }
    stage layer1: basic(8) x 2
    stage layer2: basic(16) x 1 stride 2 shortcut B
    head { avgpool; fc classes }
}
"""


def test_a_stage_policy_overrides_the_networks_none() -> None:
    net = resdsl.loads(SPEC, "mixed.rds")
    adds = [net.graph.node(n).scope for n in net.graph.nodes_of("add")]
    assert adds == ["layer2.0"]
    assert "layer2.0.downsample.0.weight" in net.to_torch().state_dict()


def test_add_shortcut_none_in_a_block_leaves_that_add_out() -> None:
    text = SPEC.replace("shortcut none\n", "").replace("basic(8)", "noskip(8)")
    text = "block noskip(width) { conv1: conv width k3 p1; bn1: bn; add shortcut none; relu }\n" + text
    net = resdsl.loads(text, "noskip.rds")
    assert [net.graph.node(n).scope for n in net.graph.nodes_of("add")] == ["layer2.0"]
