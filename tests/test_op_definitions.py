"""The op definitions are the one place an op's meaning is written: everything else derives from
them, and a backend without a converter for an op says so, located, before lowering anything."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, TEST_SPECS
from hypothesis import given, settings
from strategies import LAYER_OPS, layers

import resdsl
from resdsl.backends import onnx_export, torch_codegen
from resdsl.backends.weights import counters, expected_shapes, load_weights
from resdsl.cli import main
from resdsl.formatter import format_source
from resdsl.ops import JOINS, OPS, OpDef, register, unregister, user_ops
from resdsl.ops.rules import same_shape
from resdsl.parser import SHORT_ATTRS
from resdsl.stats import layer_stats
from resdsl.summary import summary_data
from resdsl.tvm import relax_frontend

BACKENDS = {"torch": torch_codegen.CONVERTERS, "onnx": onnx_export.CONVERTERS,
            "relax": relax_frontend.CONVERTERS}


# ---- what derives from the definitions ----------------------------------------------------------
def test_every_op_has_a_converter_in_every_backend() -> None:
    for backend, table in BACKENDS.items():
        inference = backend != "torch"  # ONNX and TVM leave train-only ops out
        missing = [op for op, d in OPS.items()
                   if op != "input" and op not in table and not (inference and d.train_only)]
        assert not missing, f"{backend} has no converter for {missing}"
        assert set(table) <= set(OPS), f"{backend} converts ops nobody defined"


def test_the_torch_modules_are_the_ops_defined_as_modules() -> None:
    modules = {op for op, c in torch_codegen.CONVERTERS.items() if isinstance(c, torch_codegen.Module)}
    assert modules == {op for op, d in OPS.items() if d.module}


def test_short_forms_are_the_grammars() -> None:
    """The grammar lexes `k3` before it knows the op, so a definition's short form must be the
    letter the parser maps to that attribute."""
    for op in OPS.values():
        for attr in op.attrs:
            if attr.short is not None:
                assert SHORT_ATTRS[attr.short] == attr.name, (op.name, attr.name)


def test_parameter_counts_derive_from_the_weights_the_definitions_own() -> None:
    net = resdsl.load("specs/resnet50.rds")
    params = sum(r.params for r in layer_stats(net.graph))
    assert params == 25_557_032  # torchvision's resnet50
    shapes = expected_shapes(net.graph)
    assert shapes["conv1.weight"] == (64, 3, 7, 7) and shapes["fc.bias"] == (1000,)
    assert "bn1.running_var" in shapes and "bn1.num_batches_tracked" not in shapes
    assert "bn1.num_batches_tracked" in counters(net.graph)


def _table(heading: str) -> list[str]:
    """The first cells of the README table after the line `heading`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rest = text[text.index(heading):].splitlines()[1:]
    rows = [line for line in rest[next(i for i, line in enumerate(rest) if line.startswith("|")):]]
    rows = rows[:next((i for i, line in enumerate(rows) if not line.startswith("|")), len(rows))]
    return [row.split("|")[1] for row in rows[2:]]


def test_the_readme_layer_table_lists_every_layer_and_only_those() -> None:
    """Adding an op means adding its row to the README's table of layers (A tour of the language)."""
    documented = {word for cell in _table("Layers:") for word in re.findall(r"`(\w+)", cell)}
    assert documented - {"add"} <= set(user_ops()), "the README documents a layer no definition has"
    assert set(user_ops()) <= documented, f"no README row for {sorted(set(user_ops()) - documented)}"
    joins = {word for cell in _table("| construct | meaning |") for word in re.findall(r"`(\w+)", cell)}
    assert set(JOINS) <= joins | documented


def test_the_highlighter_knows_every_layer_and_keyword() -> None:
    from pygments.token import Keyword, Name

    from resdsl.highlight import RdsLexer
    from resdsl.keywords import keywords
    def tokens(text: str) -> list:
        return [(t, v) for t, v in RdsLexer().get_tokens(text) if v.strip()]
    assert all(tokens(op) == [(Name.Builtin, op)] for op in LAYER_OPS)
    assert all(tokens(word) == [(Keyword, word)] for word in keywords())
    assert tokens("policy mine") == [(Keyword.Declaration, "policy"), (Name.Class, "mine")]


# ---- an include of policies alone (the loader's and the lexer's keywords come from the grammar) ---
def test_an_include_holding_only_policies_is_a_spec(tmp_path: Path) -> None:
    (tmp_path / "policies.rds").write_text("# shortcuts of my own\npolicy proj(channels, stride) {\n"
                                           "    downsample.0: conv channels s=stride\n}\n")
    (tmp_path / "net.rds").write_text('include "policies.rds"\nnetwork n {\n    input 3x16x16\n'
                                      "    classes 4\n    shortcut proj\n    stage s: basic(8) x 1 stride 2\n"
                                      "    head { avgpool; fc classes }\n}\n")
    net = resdsl.load(tmp_path / "net.rds")
    assert "s.0.downsample.0" in net.graph


# ---- a throwaway op: its definition alone makes check and summary work --------------------------
SPEC = """network throwaway {{
    input 3x8x8
    classes 4
    stem {{ conv1: conv 4 k3 p1; {layers} }}
    head {{ avgpool; fc classes }}
}}
"""


@pytest.fixture
def twice():
    """An op defined, for the test's length, and converted by no backend."""
    ops = [register(OpDef(name, f"{name}: a test's throwaway op", same_shape, module=True))
           for name in ("twice", "thrice")]
    yield ops[0]
    for op in ops:
        unregister(op.name)


def test_a_defined_op_checks_summarises_and_formats(twice) -> None:
    net = resdsl.loads(SPEC.format(layers="t: twice"), "throwaway.rds")
    assert net.graph.node("t").op == "twice"
    row = next(r for r in summary_data(net.graph)["layers"] if r["name"] == "t")
    assert row["op"] == "twice" and row["params"] == 0 and row["shape"] == [4, 8, 8]
    assert "t: twice" in format_source(SPEC.format(layers="t: twice"))


@pytest.mark.parametrize("backend", ["torch", "onnx", "relax"])
def test_every_backend_refuses_an_op_it_cannot_lower_located(twice, backend) -> None:
    net = resdsl.loads(SPEC.format(layers="t: twice; relu; u: thrice"), "throwaway.rds")
    lower = {"torch": torch_codegen.generate, "onnx": lambda g: onnx_export.to_onnx(g, {}),
             "relax": lambda g: relax_frontend.to_relax(g, {})}[backend]
    with pytest.raises(resdsl.ResdslError) as caught:
        lower(net.graph)
    text = caught.value.render()
    # Both ops at once, the first located at its layer, the second in a note.
    assert text.startswith(f"throwaway.rds:4:33: error: the {backend} backend cannot lower 2 ops: "
                           "`twice`, `thrice`"), text
    assert "`thrice` is used here (throwaway.rds:4:" in text


@pytest.mark.parametrize("target, backend", [("torch", "torch"), ("onnx", "onnx"), ("llvm", "relax")])
def test_the_cli_exits_1_naming_the_op_and_where(twice, target, backend, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "throwaway.rds"
    spec.write_text(SPEC.format(layers="t: twice"))
    assert main(["check", str(spec)]) == 0
    assert main(["summary", str(spec)]) == 0
    capsys.readouterr()
    # The target's own backend refuses, before the torch module makes the weights.
    out = tmp_path / {"torch": "net.py", "onnx": "net.onnx", "llvm": "net.so"}[target]
    assert main(["compile", str(spec), "--target", target, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:4:33: error: the {backend} backend cannot lower op `twice`" in err
    assert "KeyError" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [spec]  # nothing written


def test_a_name_taken_cannot_be_registered_again() -> None:
    with pytest.raises(ValueError):
        register(OpDef("conv", "another conv", same_shape))
    with pytest.raises(ValueError):
        unregister("conv")


# ---- random layers of every defined op ------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(layers())
def test_a_random_layer_of_any_op_checks_or_is_a_located_error(layer: str) -> None:
    text = SPEC.format(layers=layer)
    try:
        net = resdsl.loads(text, "random.rds")
    except resdsl.ResdslError as exc:
        assert exc.diagnostic.span is not None, exc.render()
        return
    assert net.params > 0


def test_the_test_specs_use_every_op() -> None:
    """tests/specs (every_op.rds, branches.rds, ...) is what the backends' numerics tests run every
    op through: a new op belongs in one of them too."""
    used = set()
    for spec in TEST_SPECS:
        graph = resdsl.load(spec).graph
        used |= {graph.node(n).op for n in graph.order()}
    # Train-only ops are the identity to ONNX and TVM; the property tests' blocks build them in torch.
    wanted = {op for op in (*user_ops(), *JOINS) if not OPS[op].train_only}
    assert wanted <= used, sorted(wanted - used)


def test_what_onnx_cannot_express_is_located_too() -> None:
    net = resdsl.loads(SPEC.format(layers="pool: avgpool size=3"), "pool.rds")
    with pytest.raises(resdsl.ResdslError) as caught:
        onnx_export.to_onnx(net.graph, load_weights(net.graph))
    assert caught.value.render().startswith("pool.rds:4:33: error: ONNX cannot express `pool`")
