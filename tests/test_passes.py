"""Each pass alone, its contract, and the pass manager that checks contracts around passes."""
from __future__ import annotations

import copy
import dataclasses

import pytest

from resdsl import ResdslError
from resdsl.ir import INPUT, Graph
from resdsl.loader import load_text
from resdsl.lower import lower
from resdsl.passes import IRError, InferShapes, LegalizeShortcuts, PassManager, Verify, run_pipeline
from resdsl.passes.properties import LEGAL_ADDS, SHAPES

TWO_STAGES = """
network two_stages {{
    input 3x16x16
    classes 10
    shortcut {policy}
    stem {{ conv1: conv 8 k3 p1; bn1: bn; relu }}
    stage layer1: basic(8) x 2
    stage layer2: basic(16) x 2 stride 2
    head {{ avgpool; fc classes }}
}}
"""


def lowered(policy: str = "B") -> Graph:
    return lower(load_text(TWO_STAGES.format(policy=policy), "two_stages.rds"))


def snapshot(graph: Graph) -> tuple:
    """Everything a pass could change: nodes with their data, and edges with operand positions."""
    nodes = {n: dataclasses.replace(graph.node(n), span=None) for n in graph.nx}
    return copy.deepcopy(nodes), sorted((u, v, d["index"]) for u, v, d in graph.nx.edges(data=True))


def ops_in(graph: Graph, scope: str) -> list[tuple[str, str]]:
    return [(graph.node(n).label, graph.node(n).op) for n in graph.scope_nodes(scope)]


def test_infer_shapes_gives_every_node_its_shape_and_is_idempotent() -> None:
    graph = lowered()
    assert not any(graph.node(n).shape for n in graph.nx if n != INPUT)
    InferShapes().run(graph)
    assert graph.shape(INPUT) == (3, 16, 16) and graph.shape("conv1") == (8, 16, 16)
    assert graph.shape("layer2.0.conv1") == (16, 8, 8)  # the stride-2 conv
    assert graph.shape("fc") == (10,)
    before = snapshot(graph)
    assert InferShapes().run(graph) is False
    assert snapshot(graph) == before


@pytest.mark.parametrize("policy,first,rest", [
    ("B", [("downsample.0", "conv"), ("downsample.1", "bn")], []),
    ("C", [("downsample.0", "conv"), ("downsample.1", "bn")], [("downsample.0", "conv"), ("downsample.1", "bn")]),
    ("A", [("shortcut", "pad")], []),
    ("gated", [("downsample.0", "conv"), ("downsample.1", "bn"), ("gate", "conv")], [("gate", "conv")]),
])
def test_legalize_shortcuts_inserts_what_each_policy_says(policy, first, rest) -> None:
    graph = lowered(policy)
    InferShapes().run(graph)
    body = {n for n in ops_in(graph, "layer2.0")}
    assert LegalizeShortcuts().run(graph) is True
    assert [x for x in ops_in(graph, "layer2.0") if x not in body] == first  # where shapes change
    assert [x for x in ops_in(graph, "layer2.1") if x not in body] == rest  # where they agree
    roles = {"downsample.0": "projection", "downsample.1": "projection", "shortcut": "pad", "gate": "gate"}
    for scope in graph.blocks:  # what the pass inserted has a role, what the user wrote has none
        for n in graph.scope_nodes(scope):
            assert graph.node(n).role == roles.get(graph.node(n).label), n
    add = graph.node("layer2.0.add")
    assert {graph.shape(i) for i in graph.inputs("layer2.0.add")} == {add.shape}
    if policy == "A":
        pad = graph.node("layer2.0.shortcut").attrs
        assert (pad["stride"], pad["pad_before"], pad["pad_after"]) == (2, 4, 4)
    before = snapshot(graph)
    assert LegalizeShortcuts().run(graph) is False  # idempotent: every add is already legal
    assert snapshot(graph) == before
    Verify().run(graph)


def test_legalize_shortcuts_refuses_identity_where_shapes_differ() -> None:
    graph = lowered("identity")
    InferShapes().run(graph)
    with pytest.raises(ResdslError, match="residual add needs equal shapes: 16x8x8"):
        LegalizeShortcuts().run(graph)


def test_the_pipeline_provides_shapes_and_legal_adds() -> None:
    manager = PassManager((InferShapes(), LegalizeShortcuts()))
    manager.run(lowered())
    assert manager.held == {SHAPES, LEGAL_ADDS}


class Forgetful:
    """A pass that promises legal adds and does nothing."""
    name = "forgetful"
    requires: frozenset[str] = frozenset()
    provides = frozenset({LEGAL_ADDS})

    def run(self, graph: Graph) -> bool:
        return False


class Vandal:
    """A pass that changes a conv's width and says nothing about shapes."""
    name = "vandal"
    requires: frozenset[str] = frozenset()
    provides: frozenset[str] = frozenset()

    def run(self, graph: Graph) -> bool:
        graph.node("layer1.0.conv2").attrs["out"] = 9
        return True


def test_the_manager_catches_a_pass_that_breaks_its_promise() -> None:
    with pytest.raises(IRError, match=r"after pass `forgetful`, which provides it: not legal-adds: "
                                      r"layer2.0.add: add operands differ"):
        PassManager((InferShapes(), Forgetful())).run(lowered())


def test_the_manager_checks_what_a_pass_requires() -> None:
    with pytest.raises(IRError, match=r"before pass `legalize-shortcuts`, which requires it: not shapes: "
                                      r"<input>: no shape; conv1: no shape; .* and 29 more"):
        PassManager((LegalizeShortcuts(),)).run(lowered())


def test_an_edit_invalidates_what_it_does_not_provide_again() -> None:
    # Shapes held after infer-shapes; the vandal changed the graph, so legalization must see them
    # checked again, and they are stale.
    with pytest.raises(IRError, match=r"before pass `legalize-shortcuts`.*layer1.0.conv2: shape 8x16x16 is stale, "
                                      r"its inputs give 9x16x16"):
        PassManager((InferShapes(), Vandal(), LegalizeShortcuts())).run(lowered())


def test_verify_alone_finds_a_graph_that_does_not_end_in_its_output() -> None:
    graph = run_pipeline(lowered())
    graph.add("dangling", "relu", ["conv1"], span=None)
    with pytest.raises(IRError, match="must end in its output 'fc', ends in"):
        Verify().run(graph)


# ---- the shortcut samples exactly the pixels the residual branch does ------------------------------
STRIDE_3 = """
network stride3 {{
    input 3x4x4
    classes 10
    shortcut {policy}
    stem {{ conv 8 k3 p1 }}
    stage layer1: basic(16) x 1 stride 3
    head {{ avgpool; fc classes }}
}}
"""


@pytest.mark.parametrize("policy, node", [("B", "downsample.0"), ("C", "downsample.0"), ("A", "shortcut"),
                                          ("gated", "gate")])
def test_shortcut_stride_is_the_branch_stride_not_a_guess_from_shapes(policy: str, node: str) -> None:
    # On a 4x4 map strides 2 and 3 both give 2x2; the branch samples pixels 0 and 3, so must the shortcut.
    graph = run_pipeline(lower(load_text(STRIDE_3.format(policy=policy), "stride3.rds")))
    assert graph.node(f"layer1.0.{node}").attrs["stride"] == 3


def test_stride_3_projection_equals_an_independent_computation() -> None:
    import torch
    import resdsl
    net = resdsl.loads(STRIDE_3.format(policy="B"))
    model = net.to_torch(seed=0).eval()
    x = torch.randn(1, 3, 4, 4)
    block = model.layer1[0]
    stem_out = model.conv(x)
    with torch.no_grad():
        projected = block.downsample(stem_out)
        conv = block.downsample[0]
        want = torch.nn.functional.conv2d(stem_out[:, :, ::3, ::3], conv.weight)  # pixels 0 and 3
        want = block.downsample[1](want)
    torch.testing.assert_close(projected, want)


def test_a_resolution_the_branch_strides_do_not_explain_is_an_error() -> None:
    text = STRIDE_3.replace("basic(16) x 1 stride 3", "squeeze(16) x 1").format(policy="B")
    text = "block squeeze(w) {\n conv w k3 p1\n avgpool\n add shortcut\n}\n" + text.replace("4x4", "8x8")
    with pytest.raises(ResdslError, match="no shortcut can match: its strides multiply to 1"):
        run_pipeline(lower(load_text(text, "squeeze.rds")))


def test_every_layer_a_policy_inserts_is_a_projection() -> None:
    text = TWO_STAGES.format(policy="avg_down")
    graph = run_pipeline(lower(load_text(text, "two_stages.rds")))
    inserted = [(graph.node(n).label, graph.node(n).role) for n in graph.scope_nodes("layer2.0")
                if graph.node(n).role is not None]
    assert inserted == [("downsample.0", "projection"), ("downsample.1", "projection"),
                        ("downsample.2", "projection")]
    assert all(graph.node(n).role is None for n in graph.scope_nodes("layer2.1"))


def test_verify_finds_a_cycle() -> None:
    graph = run_pipeline(lowered())
    graph.set_input("conv1", 0, "layer1.0.conv1")  # the stem now reads a later layer
    with pytest.raises(IRError, match="not well-formed: the graph has a cycle"):
        Verify().run(graph)


def test_a_node_is_typed_and_networkx_keeps_it_typed() -> None:
    graph = run_pipeline(lowered())
    node = graph.node("layer2.0.downsample.0")
    assert graph.nx.nodes["layer2.0.downsample.0"] is node  # one object, whichever API reads it
    assert (node.op, node.scope, node.label, node.role, node.shape) == (
        "conv", "layer2.0", "downsample.0", "projection", (16, 8, 8))
    assert graph.node("layer2.0.add").facts["legal"] is True and "legal" not in node.facts
    with pytest.raises(TypeError):  # no dict protocol: a field is read as an attribute
        node["attrs"]
    assert dict(graph.nx.nodes(data=True))["conv1"] is graph.node("conv1")
    copied = graph.nx.copy()  # networkx copies keep nodes typed, each its own
    assert copied.nodes["conv1"] == graph.node("conv1") and copied.nodes["conv1"] is not graph.node("conv1")
    copied.nodes["conv1"].attrs["out"] = 1
    assert graph.node("conv1").attrs["out"] != 1
    assert sorted(copied.edges(data="index")) == sorted(graph.nx.edges(data="index"))


def test_a_deep_copy_keeps_one_node_object_per_name_and_edits_stay_apart() -> None:
    graph = run_pipeline(lowered())
    twin = copy.deepcopy(graph)
    assert twin.node("conv1") is twin.nx.nodes["conv1"] and twin.node("conv1") is not graph.node("conv1")
    twin.set_input("relu", 0, INPUT)  # conv1, bn1 now dead ends in the copy only
    twin.remove_input("relu", 0)
    twin.set_input("relu", 0, "bn1")
    assert twin.order() == graph.order()
    assert graph.inputs("relu") == ["bn1"]
    twin.add("extra", "relu", ["fc"], span=None)
    twin.remove("extra")
    assert "extra" not in twin and twin.order() == graph.order()
