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
    assert {k: node["attrs"][k] for k in attrs} == attrs


def test_stage_options_still_parse_in_any_order() -> None:
    text = NET.format(layer="conv 16 k3 p1").replace(
        "    head", "    stage layer1: basic(32) x 2 shortcut A stride 2\n    stage layer2: basic(64) x 1 stride 2 shortcut B\n    head")
    graph = resdsl.loads(text).graph
    assert graph.node("layer1.0.shortcut")["op"] == "pad"
    assert graph.node("layer2.0.downsample.0")["attrs"]["stride"] == 2
