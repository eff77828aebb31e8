"""Tooling around the language: pictures, the lexer, limits, atomic outputs, injection, fuzzing."""
from __future__ import annotations

import keyword
import os
import re
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resdsl
from conftest import ROOT, SPECS
from mutation import mutate_tokens, seeds
from resdsl import ResdslError
from resdsl.cli import main


# ---- resdsl graph ---------------------------------------------------------------------------------
def test_graph_dot_marks_stages_shapes_and_shortcuts(tmp_path) -> None:
    out = tmp_path / "r18.dot"
    assert main(["graph", "specs/resnet18.rds", "-o", str(out)]) == 0
    dot = out.read_text()
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        assert f"subgraph cluster_{stage} " in dot
    assert dot.count('"layer2.0.downsample.0" [label="downsample.0') == 1  # projections are marked...
    assert dot.count("#ffb74d") == 6  # ...in orange: conv + BN in each of 3 stages
    assert 'label="64x56x56"' in dot  # tensor shapes on edges
    assert dot.count("color=\"#e65100\" penwidth=1.5 style=dashed") == 5 + 3 * 3  # 5 identity, 3 x (in, conv, bn)


def test_graph_draws_branches_joins_and_user_policies(tmp_path) -> None:
    out = tmp_path / "branches.dot"
    assert main(["graph", "tests/specs/branches.rds", "-o", str(out)]) == 0
    dot = out.read_text()
    assert '"layer1.0.se.fc1" [label="se.fc1' in dot  # the SE branch's layers, with their labels
    assert '-> "layer1.0.mul"' in dot and '"layer1.0.se.sigmoid" -> "layer1.0.mul"' in dot
    assert '"layer3.0.b.bn" -> "layer3.0.cat"' in dot and '"layer3.0.a.bn" -> "layer3.0.cat"' in dot
    assert '"layer2.0.downsample.0" [label="downsample.0\navgpool 2x2, /2' in dot  # avg_down's layers
    assert 'label="32x16x16"' in dot and 'label="48x8x8"' in dot  # shapes on edges


def test_graph_collapse_keeps_resnet1202_small(tmp_path) -> None:
    collapsed = tmp_path / "small.dot"
    assert main(["graph", "specs/cifar/resnet1202.rds", "-o", str(collapsed), "--collapse"]) == 0
    text = collapsed.read_text()
    assert "layer1.1 … layer1.199 (x 199)" in text
    assert len(re.findall(r"^\s+\"[^\"]+\" \[label", text, re.M)) < 60
    assert "zero-pad +16ch, /2" in text  # option A marked


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz not installed")
def test_graph_renders_svg(tmp_path) -> None:
    out = tmp_path / "g.svg"
    assert main(["graph", "specs/cifar/highway20.rds", "--collapse", "-o", str(out)]) == 0
    svg = out.read_text()
    assert svg.startswith("<?xml") and "σ⊕" in svg and "gate" in svg


def test_graph_without_dot_is_a_clear_error(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    assert main(["graph", "specs/cifar/resnet20.rds", "-o", str(tmp_path / "g.svg")]) == 1
    assert "`dot` program is not installed" in capsys.readouterr().err
    assert not (tmp_path / "g.svg").exists()


# ---- the lexer ------------------------------------------------------------------------------------
def test_pygments_finds_the_lexer_by_entry_point() -> None:
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
    from pygments.token import Error
    assert get_lexer_for_filename("x.rds").name == "resdsl"
    lexer = get_lexer_by_name("rds")
    for spec in SPECS:
        assert not any(t is Error for t, _ in lexer.get_tokens((ROOT / spec).read_text()))


def test_lexer_knows_dotted_labels_floats_and_the_new_ops() -> None:
    from pygments.token import Name, Number
    from resdsl.highlight import RdsLexer
    tokens = [(t, v) for t, v in RdsLexer().get_tokens("classifier.6: fc classes\ndrop: dropout 0.25 k=1e-4\n")
              if v.strip()]
    assert (Name.Label, "classifier.6") in tokens and (Name.Label, "drop") in tokens
    assert (Name.Builtin, "dropout") in tokens
    assert (Number.Float, "0.25") in tokens and (Number.Float, "1e-4") in tokens


def test_show_respects_no_color(monkeypatch, capsys) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["show", "specs/resnet18.rds"]) == 0
    out = capsys.readouterr().out
    assert out == (ROOT / "specs/resnet18.rds").read_text() and "\x1b[" not in out


# ---- limits ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("stem { conv1: conv 1000000000 k3 p1 }", "larger than resdsl allows"),
    ("stage s: basic(16) x 5000000", "the network would have 5000000 blocks"),
    ("stage s: basic(16) x 1000000 * 1000000", "larger than resdsl allows"),
    ("stem { conv1: conv 16 k999 }", "`kernel` = 999 is larger"),
])
def test_absurd_sizes_are_refused_before_allocating(text: str, message: str) -> None:
    spec = f"network big {{\n    input 3x32x32\n    classes 10\n    {text}\n}}\n"
    with pytest.raises(ResdslError, match=re.escape(message)):
        resdsl.loads(spec)


def test_huge_input_is_refused() -> None:
    with pytest.raises(ResdslError, match="larger than resdsl allows"):
        resdsl.loads("network n {\n input 3x100000x100000\n classes 1\n}\n")


def test_limits_are_adjustable_by_environment() -> None:
    code = ("import resdsl; n = resdsl.loads('network n {\\n input 3x8x8\\n classes 2\\n "
            "stage s: basic(8) x 30\\n head { avgpool; fc classes }\\n}\\n'); print(len(n.graph.blocks))")
    env = {**os.environ, "RESDSL_MAX_BLOCKS": "20"}
    low = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert low.returncode != 0 and "resdsl allows 20" in low.stderr
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ok.stdout.strip() == "30"


def test_deep_include_chains_are_refused(tmp_path) -> None:
    for i in range(80):
        (tmp_path / f"f{i}.rds").write_text(f'include "f{i + 1}.rds"\n')
    (tmp_path / "f80.rds").write_text("block b(w) { conv w }\n")
    main_spec = tmp_path / "main.rds"
    main_spec.write_text('include "f0.rds"\nnetwork n {\n input 3x8x8\n classes 2\n}\n')
    with pytest.raises(ResdslError, match="includes nest deeper than 64"):
        resdsl.load(main_spec)


# ---- outputs --------------------------------------------------------------------------------------
def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    from resdsl import output
    target = tmp_path / "net.py"
    target.write_text("previous contents")

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(output.os, "replace", broken_replace)
    from resdsl.diagnostics import ResdslError
    with pytest.raises(ResdslError, match="cannot write .*net.py: disk full"):
        output.write_atomic(target, "new contents")
    assert target.read_text() == "previous contents"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


# ---- names cannot inject code ---------------------------------------------------------------------
HOSTILE = ['a"b', "a\nb", "a\\b", "a'b", "a;b", "aé", "аb",  # Cyrillic а looks like Latin a
           "a b", "a)", "a#b", "ａ", "a\u200bb"]


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
@pytest.mark.parametrize("where", ["network {}", "stage {}: basic(8) x 1", "block {}(w)"])
def test_non_identifier_names_are_syntax_errors(name: str, where: str) -> None:
    spec = f"network n {{\n input 3x8x8\n classes 2\n {where.format(name)}\n}}\n"
    if where.startswith("network"):
        spec = f"network {name} {{\n input 3x8x8\n classes 2\n}}\n"
    elif where.startswith("block"):
        spec = f"block {name}(w) {{ conv w }}\nnetwork n {{\n input 3x8x8\n classes 2\n}}\n"
    with pytest.raises(ResdslError):
        resdsl.loads(spec)


RISKY = sorted(set(keyword.kwlist) | {"print", "exec", "eval", "open", "__import__", "__init__", "self",
                                       "torch", "nn", "F", "Tensor", "build", "super", "object", "type",
                                       "forward", "training", "x", "out", "identity", "annotations"})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(RISKY), st.sampled_from(RISKY), st.sampled_from(RISKY), st.sampled_from(RISKY))
def test_risky_names_never_reach_the_source_unsafely(net_name, stage, block, label) -> None:
    spec = (f"block {block}(w, stride = 1) {{\n    {label}: conv w k3 s=stride p1\n    add shortcut\n}}\n"
            f"network {net_name} {{\n    input 3x8x8\n    classes 2\n    stage {stage}: {block}(4) x 2 stride 2\n"
            f"    head {{ avgpool; fc classes }}\n}}\n")
    try:
        net = resdsl.loads(spec)
    except ResdslError as exc:
        assert "cannot name a layer" in str(exc) or "unexpected" in str(exc), exc.render()
        return
    from resdsl.backends.torch_codegen import load_source
    module = load_source(net.torch_source(), "risky")
    # Imports and helpers are emitted only where used (F with option A, projection with B/C).
    expected_globals, optional = {"annotations", "torch", "Tensor", "nn", "build"}, {"F", "projection"}
    classes = {k for k, v in vars(module).items() if isinstance(v, type)} - {"Tensor"}
    found = set(k for k in vars(module) if not k.startswith("__")) - classes
    assert expected_globals <= found <= expected_globals | optional
    model = module.build(0)
    assert {k.split(".")[0] for k in model.state_dict()} == {stage, "fc"}
    assert f"{stage}.0.{label}.weight" in model.state_dict()


# ---- fuzzing (tests/fuzz.py runs the same mutators for as long as you like) --------------------------------------------------------------------------------------
@st.composite
def mutated(draw) -> str:
    def choose(kind, options):
        return draw(st.sampled_from(list(options)))
    return mutate_tokens(draw(st.sampled_from(seeds())), choose)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_specs_only_ever_raise_resdsl_errors(text: str) -> None:
    try:
        net = resdsl.loads(text, "fuzz.rds", ROOT / "specs")
    except ResdslError as exc:
        rendered = exc.render()
        assert rendered.startswith(("fuzz.rds:", "error:")), rendered
        return
    net.torch_source()  # valid mutants must also generate code


@settings(max_examples=25, deadline=None)
@given(mutated())
def test_mutated_specs_through_the_cli(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.rds"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "resdsl", "check", str(path)], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    if result.returncode == 1:
        assert re.match(r"\S+:\d+:\d+: error: ", result.stderr) or result.stderr.startswith("error: ")


def test_the_readmes_links_resolve_inside_the_repository() -> None:
    import re
    for doc in ("README.md", "SECURITY.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s#]+)\)", text):
            if "://" in target or target == "x":  # `...["main"](x)` is a call in a code span, not a link
                continue
            assert (ROOT / target).exists(), f"{doc} links to {target}, which is not in the repository"
