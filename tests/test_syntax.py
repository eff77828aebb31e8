"""The surface syntax as the README documents it: long and short attribute forms, in any order."""
from __future__ import annotations

import pytest

import resdsl

NET = "network n {{\n    input 3x32x32\n    classes 10\n    stem {{ {layer} }}\n    head {{ avgpool; fc classes }}\n}}\n"


@pytest.mark.parametrize("layer, attrs", [
    ("conv 16 stride=2", {"out": 16, "stride": 2, "kernel": 1}),
    ("conv 16 kernel=3 stride=2", {"out": 16, "kernel": 3, "stride": 2}),
    ("conv 16 k3 stride=2", {"out": 16, "kernel": 3, "stride": 2}),
    ("conv 16 kernel=3 s2 padding=1", {"out": 16, "kernel": 3, "stride": 2, "padding": 1}),
    ("conv out=16 stride=2 shortcut=0", None),
    ("maxpool kernel=3 stride=2 padding=1", {"kernel": 3, "stride": 2, "padding": 1}),
])
def test_keyword_attributes_after_a_positional_expression(layer: str, attrs: dict | None) -> None:
    if attrs is None:  # `shortcut` is not an attribute of conv: a located error, not a parse failure
        with pytest.raises(resdsl.ResdslError, match="has no attribute `shortcut`"):
            resdsl.loads(NET.format(layer=layer))
        return
    graph = resdsl.loads(NET.format(layer=layer)).graph
    node = graph.node(graph.order()[1])
    assert {k: node.attrs[k] for k in attrs} == attrs


def test_stage_options_still_parse_in_any_order() -> None:
    text = NET.format(layer="conv 16 k3 p1").replace(
        "    head", "    stage layer1: basic(32) x 2 shortcut A stride 2\n    stage layer2: basic(64) x 1 stride 2 shortcut B\n    head")
    graph = resdsl.loads(text).graph
    assert graph.node("layer1.0.shortcut").op == "pad"
    assert graph.node("layer2.0.downsample.0").attrs["stride"] == 2


# ---- --set: one file for the CIFAR depth sweep ------------------------------------------------------
@pytest.mark.parametrize("n, spec", [(5, "resnet32"), (7, "resnet44"), (9, "resnet56"), (18, "resnet110")])
def test_set_replaces_let_constants(n: int, spec: str) -> None:
    from conftest import ROOT
    swept = resdsl.load(ROOT / "specs/cifar/resnet20.rds", {"n": str(n)})
    bundled = resdsl.load(ROOT / f"specs/cifar/{spec}.rds")
    assert (swept.params, swept.macs, len(swept.graph.blocks)) == (bundled.params, bundled.macs, 6 * n // 2)


def test_set_through_the_cli_and_its_errors(capsys) -> None:
    from resdsl.cli import main
    assert main(["check", "specs/cifar/resnet20.rds", "--set", "n=2 * 9"]) == 0
    assert "1,727,962 params" in capsys.readouterr().out  # ResNet-110
    assert main(["check", "specs/cifar/resnet20.rds", "--set", "depth=3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("specs/cifar/resnet20.rds:2:1: error: `--set depth=...`: network `resnet20` has no "
                          "`let depth`\n")
    assert "= help: --set replaces the network's `let` constants: n" in err
    assert main(["check", "specs/cifar/resnet20.rds", "--set", "n=3 +"]) == 1
    assert capsys.readouterr().err.startswith("--set n:1:")
    assert main(["check", "specs/cifar/resnet20.rds", "--set", "n=0.5"]) == 1
    assert "a stage's block count must be an integer, not 0.5" in capsys.readouterr().err


def test_an_include_of_policies_only_is_a_spec(tmp_path) -> None:
    # The include check's "looks like a spec" test knew include, block and network, not policy.
    import resdsl
    (tmp_path / "policies.rds").write_text("# only a policy\npolicy mine(channels, stride) {\n"
                                           "    downsample.0: conv channels s=stride\n    downsample.1: bn\n}\n")
    (tmp_path / "net.rds").write_text(
        'include "policies.rds"\nnetwork n {\n    input 3x32x32\n    classes 10\n'
        "    stem { conv1: conv 16 k3 p1; bn1: bn; relu }\n"
        "    stage layer1: basic(32) x 1 stride 2 shortcut mine\n    head { avgpool; fc classes }\n}\n")
    net = resdsl.load(tmp_path / "net.rds")
    assert "layer1.0.downsample.0.weight" in net.to_torch(seed=0).state_dict()
