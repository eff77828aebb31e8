"""The textual IR (`resdsl/printer.py`): what each pass does, read as text, as MLIR and TVM pass
tests compare IR; and the text is a function of the graph alone."""
from __future__ import annotations

import copy
from textwrap import dedent

import pytest
from hypothesis import HealthCheck, assume, given, settings
from strategies import networks

from resdsl import ResdslError
from resdsl.loader import load_text
from resdsl.lower import lower
from resdsl.passes import PIPELINE, PassManager, pass_names, run_pipeline
from resdsl.printer import format_graph, format_node

# A block of its own (not the prelude's), so the text below changes only when the IR does.
SPEC = """
block tiny(width, stride = 1) {{
    conv1: conv width k3 s=stride p1
    add shortcut
}}
policy pool_proj(channels, stride) {{
    downsample.0: avgpool k=stride s=stride
    downsample.1: conv channels
}}
network ir_text {{
    input 3x8x8
    classes 10
    shortcut {policy}
    stem {{ conv 4 k3 p1; bn eps=0.001 }}
    stage layer1: tiny(8) x 1 stride 2
    head {{ avgpool; fc classes }}
}}
"""


def text_after(policy: str, until: str) -> str:
    graph = lower(load_text(SPEC.format(policy=policy), "ir_text.rds"))
    return format_graph(run_pipeline(graph, until=until))


def block_lines(text: str) -> str:
    """The lines inside block layer1.0, dedented."""
    lines = text.splitlines()
    start = lines.index("    block layer1.0 = tiny(width=8, stride=2) {")
    return dedent("\n".join(lines[start + 1:lines.index("    }", start)]))


def test_the_lowered_graph_with_shapes_reads_as_the_spec_says() -> None:
    assert text_after("B", "infer-shapes") == dedent("""\
        graph ir_text(classes=10) {
          %<input> = input() {shape=(3, 8, 8)} : 3x8x8
          %conv = conv(%<input>) {out=4, kernel=3, padding=1} : 4x8x8
          %bn = bn(%conv) {eps=0.001} : 4x8x8
          stage layer1 {
            block layer1.0 = tiny(width=8, stride=2) {
              %layer1.0.conv1 = conv(%bn) {out=8, kernel=3, stride=2, padding=1} : 8x4x4
              %layer1.0.add = add(%layer1.0.conv1, %bn) {policy="B", source="bn"} : 8x4x4
            }
          }
          %avgpool = avgpool(%layer1.0.add) : 8x1x1
          %fc = fc(%avgpool) {out=10} : 10
          return %fc
        }
        """)


def test_legalize_shortcuts_inserts_a_b_projection_and_nothing_else() -> None:
    before, after = text_after("B", "infer-shapes"), text_after("B", "legalize-shortcuts")
    inserted = [line for line in after.splitlines() if line not in before.splitlines()]
    assert inserted == [
        "      %layer1.0.downsample.0 = conv(%bn) {out=8, stride=2} : 8x4x4 role=projection",
        "      %layer1.0.downsample.1 = bn(%layer1.0.downsample.0) : 8x4x4 role=projection",
        ('      %layer1.0.add = add(%layer1.0.conv1, %layer1.0.downsample.1) {policy="B", source="bn"} '
         ': 8x4x4'),
    ]
    assert before.replace("%bn) {policy", "%layer1.0.downsample.1) {policy") == "".join(
        line + "\n" for line in after.splitlines() if "role=" not in line)


@pytest.mark.parametrize("policy, want", [
    ("A", """\
        %layer1.0.conv1 = conv(%bn) {out=8, kernel=3, stride=2, padding=1} : 8x4x4
        %layer1.0.shortcut = pad(%bn) {stride=2, pad_before=2, pad_after=2} : 8x4x4 role=pad
        %layer1.0.add = add(%layer1.0.conv1, %layer1.0.shortcut) {policy="A", source="bn"} : 8x4x4"""),
    ("gated", """\
        %layer1.0.conv1 = conv(%bn) {out=8, kernel=3, stride=2, padding=1} : 8x4x4
        %layer1.0.downsample.0 = conv(%bn) {out=8, stride=2} : 8x4x4 role=projection
        %layer1.0.downsample.1 = bn(%layer1.0.downsample.0) : 8x4x4 role=projection
        %layer1.0.gate = conv(%bn) {out=8, stride=2, bias=1} : 8x4x4 role=gate
        %layer1.0.add = add(%layer1.0.conv1, %layer1.0.downsample.1, %layer1.0.gate) \
{policy="gated", gated=True, source="bn"} : 8x4x4"""),
    ("pool_proj", """\
        %layer1.0.conv1 = conv(%bn) {out=8, kernel=3, stride=2, padding=1} : 8x4x4
        %layer1.0.downsample.0 = avgpool(%bn) {kernel=2, stride=2} : 4x4x4 role=projection
        %layer1.0.downsample.1 = conv(%layer1.0.downsample.0) {out=8} : 8x4x4 role=projection
        %layer1.0.add = add(%layer1.0.conv1, %layer1.0.downsample.1) \
{policy="pool_proj", source="bn", applied=(4, 8, 2)} : 8x4x4"""),
])
def test_each_policy_legalizes_the_block_as_the_text_shows(policy: str, want: str) -> None:
    before = block_lines(text_after(policy, "infer-shapes"))
    assert before == dedent(f"""\
        %layer1.0.conv1 = conv(%bn) {{out=8, kernel=3, stride=2, padding=1}} : 8x4x4
        %layer1.0.add = add(%layer1.0.conv1, %bn) {{policy="{policy}", {'gated=True, ' * (policy == 'gated')}\
source="bn"}} : 8x4x4""")
    assert block_lines(text_after(policy, "legalize-shortcuts")) == dedent(want)


def test_before_shape_inference_no_shapes_are_shown_and_locations_on_request() -> None:
    text = SPEC.format(policy="B")
    graph = lower(load_text(text, "ir_text.rds"))
    assert " : " not in format_graph(graph)
    line = next(i for i, line in enumerate(text.splitlines(), 1) if "bn eps" in line)
    column = text.splitlines()[line - 1].index("bn eps") + 1
    want = f'%bn = bn(%conv) {{eps=0.001}} loc("ir_text.rds":{line}:{column})'
    assert format_node(graph, "bn", locations=True) == want


def test_the_manager_shows_the_graph_after_each_pass_and_until_names_a_pass() -> None:
    seen: list[tuple[str, str]] = []
    graph = lower(load_text(SPEC.format(policy="A"), "ir_text.rds"))
    PassManager(PIPELINE, after_each=lambda name, g: seen.append((name, format_graph(g)))).run(graph)
    assert [name for name, _ in seen] == pass_names() == ["infer-shapes", "legalize-shortcuts"]
    assert [text for _, text in seen] == [text_after("A", name) for name in pass_names()]
    with pytest.raises(ValueError, match="no pass named 'fold'; the passes are infer-shapes, "
                                         "legalize-shortcuts"):
        run_pipeline(graph, until="fold")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_the_text_is_a_function_of_the_graph(text: str) -> None:
    try:
        graph = run_pipeline(lower(load_text(text, "random.rds")))
    except ResdslError:
        assume(False)
        raise
    printed = format_graph(graph)
    again = run_pipeline(lower(load_text(text, "random.rds")))
    assert printed == format_graph(graph) == format_graph(again) == format_graph(copy.deepcopy(graph))
    lines = [line.strip() for line in printed.splitlines()]
    defined = [line.split(" = ", 1)[0] for line in lines if line.startswith("%")]
    assert defined == [f"%{name}" for name in graph.order()]  # every node once, in graph order


def test_a_copy_is_equal_and_its_edits_stay_in_it() -> None:
    from resdsl import load
    from resdsl.passes import INFERENCE
    graph = load("specs/cifar/highway20.rds").graph
    before = format_graph(graph)
    twin = graph.copy()
    assert format_graph(twin) == before
    PassManager(INFERENCE).run(twin)  # rewires, inserts and removes nodes
    assert format_graph(graph) == before
    assert format_graph(twin) != before and "bn" not in {twin.node(n).op for n in twin.order()}
    assert twin.blocks["layer1.0"] is not graph.blocks["layer1.0"] and twin.layout is not graph.layout
