"""Generated source: golden files, determinism across processes and hash seeds, no torch import,
and names that cannot shadow what the module needs."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resdsl
from conftest import ROOT, SPECS, check_golden
from resdsl import ResdslError
from resdsl.formatter import format_source
from resdsl.ir import INPUT, Graph
from resdsl.reserved import CONTAINER_MEMBERS, MODULE_MEMBERS

GOLDEN = ["specs/resnet18.rds", "specs/resnet50.rds", "specs/cifar/resnet20.rds", "specs/cifar/highway20.rds",
          "specs/cifar/preact_resnet164.rds"]


@pytest.mark.parametrize("spec", GOLDEN)
def test_generated_source_matches_golden(spec: str, regen: bool) -> None:
    from resdsl.backends.torch_codegen import generate
    source = generate(resdsl.load(spec).graph, source_name=os.path.basename(spec))
    check_golden(ROOT / "tests" / "golden" / (os.path.basename(spec)[:-4] + ".py"), source, regen)


def test_output_is_byte_identical_across_processes_and_hash_seeds(tmp_path) -> None:
    outputs = []
    for seed in ("0", "1", "12345"):
        out = tmp_path / f"r{seed}.py"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "resdsl", "compile", "specs/resnext50_32x4d.rds", "-o", str(out)],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.parametrize("argv", [["compile", "specs/resnet18.rds", "-o", "-"], ["--help"], ["list"],
                                  ["check", "resnet50"], ["summary", "resnet50", "--depth", "1"]])
def test_the_first_commands_do_not_import_torch(argv) -> None:
    # torch's import alone takes seconds; these stay well under it (benchmarks/startup.py).
    code = ("import sys; from resdsl.cli import main; "
            f"rc = main({argv!r}); "
            "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_reserved_labels_cover_nn_module_members() -> None:
    public = {name for name in dir(torch.nn.Module) if not name.startswith("_")}
    assert public <= MODULE_MEMBERS | {"register_full_backward_hook"}, sorted(public - MODULE_MEMBERS)
    for container in (torch.nn.ModuleDict, torch.nn.Sequential, torch.nn.ModuleList):
        own = {name for name in dir(container) if not name.startswith("_")} - public
        assert own <= CONTAINER_MEMBERS, sorted(own - CONTAINER_MEMBERS)


def test_generated_code_compiles_and_has_no_per_forward_logic() -> None:
    # The forward methods are straight-line: no loops, and no branch but the one torchvision has,
    # on whether the block was handed a shortcut module.
    source = resdsl.load("specs/cifar/resnet56.rds").torch_source()
    compile(source, "resnet56.py", "exec")
    forwards = source.split("def forward")[1:]
    for body in forwards:
        body = body.split("\n\n")[0].replace("if self.downsample is not None:", "")
        assert " for " not in body and " if " not in body, body


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_generated_source_is_tidy(spec) -> None:
    """Within the project's line limit, and every import used."""
    source = resdsl.load(spec).torch_source()
    long = [line for line in source.splitlines() if len(line) > 110]
    assert not long, long
    body = "\n".join(line for line in source.splitlines() if not line.startswith(("import ", "from ")))
    for name in ("torch", "F", "Tensor", "nn"):
        imported = re.search(rf"^(import .* as {name}|from .* import .*\b{name}\b|import {name})$", source, re.M)
        assert not imported or re.search(rf"\b{name}\b", body), f"{name} is imported, never used"


def test_one_class_per_block_definition_written_with_its_expressions() -> None:
    from resdsl.backends.torch_codegen import generate
    source = generate(resdsl.load("specs/resnet50.rds").graph)
    assert source.count("\nclass ") == 2  # Bottleneck and the network, as torchvision writes it
    assert ("self, in_channels: int, width: int, stride: int = 1, groups: int = 1, width_per_group: int = 64,\n"
            "        expansion: int = 4, downsample: nn.Module | None = None,\n") in source
    assert "self.bn3 = nn.BatchNorm2d(width * expansion)" in source
    assert "Bottleneck(256, 128, stride=2, downsample=projection(256, 512, stride=2))," in source
    assert "*[Bottleneck(1024, 256) for _ in range(5)]," in source
    resnext = generate(resdsl.load("specs/resnext50_32x4d.rds").graph)
    assert "*[Bottleneck(256, 64, groups=32, width_per_group=4) for _ in range(2)]," in resnext


MIXED_POLICIES = """
network mixed {
    input 3x16x16
    classes 4
    stem { conv1: conv 8 k3 p1; bn1: bn; relu }
    stage layer1: basic(8) x 2 shortcut gated
    stage layer2: basic(16) x 2 stride 2
    head { avgpool; fc classes }
}
"""


def test_a_definition_used_two_ways_gets_a_class_per_body() -> None:
    # A gated and an ungated `basic` do not share a forward: each body is a class of its own,
    # its integers written out, and the network is still the spec's.
    net = resdsl.loads(MIXED_POLICIES)
    source = net.torch_source()
    assert source.count("\nclass BasicBlock") == 3  # gated; strided with a projection; plain
    assert "self.gate = nn.Conv2d(8, 8, kernel_size=1)" in source
    from test_torch_backend import check_forward_shapes
    model = net.to_torch(seed=0)
    assert sum(p.numel() for p in model.parameters()) == net.params
    check_forward_shapes(net.graph, model)


def test_spec_parameter_names_cannot_shadow_python() -> None:
    # Block parameters named like builtins, keywords-to-be and the generated code's own names
    # become constructor arguments: they must not shadow anything the class uses.
    net = resdsl.loads("""
    block odd(self, print = 1, x = 1, stride = 1) {
        conv1: conv self * print k3 s=stride p1; bn1: bn; relu
        conv2: conv self * x k3 p1; bn2: bn
        add shortcut; relu
    }
    network odd_names {
        input 3x16x16
        classes 5
        stem { conv1: conv 8 k3 p1 }
        stage layer1: odd(8) x 2
        stage layer2: odd(16) x 2 stride 2
        head { avgpool; fc classes }
    }
    """)
    model = net.to_torch(seed=0).eval()
    assert tuple(model(torch.randn(2, 3, 16, 16)).shape) == (2, 5)
    from resdsl.backends.torch_codegen import generate
    source = generate(net.graph)
    assert "self, in_channels: int, self_: int, print_: int = 1, x_: int = 1, stride: int = 1," in source
    assert sum(p.numel() for p in model.parameters()) == net.params


LET_BLOCK = """
block bneck(width, stride = 1, groups = 1) {{
    {let}
    conv1: conv {mid}
    bn1: bn
    act1: relu
    conv2: conv {mid} k3 s=stride p1 g=groups
    bn2: bn
    add shortcut
    act2: relu
}}
network n {{
    input 3x16x16
    classes 5
    stem {{ conv1: conv 8 k3 p1; bn1: bn; relu }}
    stage layer1: bneck(8, groups=2) x 2
    stage layer2: bneck(16, groups=4) x 2 stride 2
    head {{ avgpool; fc classes }}
}}
"""


def test_block_let_is_computed_once_and_builds_what_the_inline_expression_builds() -> None:
    with_let = resdsl.loads(LET_BLOCK.format(let="let mid = width * groups  # inner width", mid="mid"))
    inline = resdsl.loads(LET_BLOCK.format(let="", mid="width * groups"))
    source = with_let.torch_source()
    assert source.count("class BneckBlock") == 1  # one class for all four blocks, groups 2 and 4
    assert "        mid = width * groups\n" in source
    assert "nn.Conv2d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=groups" in source
    assert (with_let.params, with_let.macs) == (inline.params, inline.macs)
    a, b = with_let.to_torch(seed=3).eval(), inline.to_torch(seed=3).eval()
    assert a.state_dict().keys() == b.state_dict().keys()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    assert format_source(LET_BLOCK.format(let="let  mid=width*groups", mid="mid")).count(
        "    let mid = width * groups\n") == 1


# ---- every name `check` accepts builds, and the module computes the graph ---------------------------
def reference_forward(graph: Graph, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The graph evaluated node by node with the model's own modules (found by node name, as the
    generated module names them): what the generated forward must compute. No gated adds."""
    for module in model.modules():  # the reference reads every value again: nothing in place
        if hasattr(module, "inplace"):
            module.inplace = False
    model.eval()
    values: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name in graph.order():
            op, ins = graph.node(name).op, [values[i] for i in graph.inputs(name)]
            if op == "input":
                values[name] = x
            elif op in ("add", "mul"):
                values[name] = ins[0] + ins[1] if op == "add" else ins[0] * ins[1]
            elif op == "concat":
                values[name] = torch.cat(ins, 1)
            else:
                arg = torch.flatten(ins[0], 1) if op == "fc" and ins[0].dim() > 2 else ins[0]
                values[name] = model.get_submodule(name)(arg)
        return values[graph.output]


def computes_its_graph(net: resdsl.Network) -> None:
    model = net.to_torch(seed=0).eval()
    assert sum(p.numel() for p in model.parameters()) == net.params
    x = torch.randn(2, *net.graph.shape(INPUT))
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, reference_forward(net.graph, model, x))


# `out` is read twice (kept in a variable), and so is `out_`; `mul out` reads the first.
KEPT_VALUES = """
block b(w) {{
    conv1: conv w k3 p1
    {first}: relu
    s: branch {{ sigmoid }}
    {second}: conv w k1
    u: branch {{ sigmoid }}
    mul {first}
    mul s
    mul u
    add shortcut
}}
network n {{
    input 3x8x8
    classes 3
    stem {{ conv 4 k3 p1 }}
    stage layer1: b(4) x 1
    head {{ avgpool; fc classes }}
}}
"""


@pytest.mark.parametrize("first, second", [("out", "out_"), ("x", "x_"), ("a_b", "a_b2")])
def test_values_kept_in_variables_never_share_one(first: str, second: str) -> None:
    computes_its_graph(resdsl.loads(KEPT_VALUES.format(first=first, second=second)))


# Names a spec may try: what Python, PyTorch and the generated module use, and plain ones.
TRICKY = ["keys", "items", "values", "pop", "update", "clear", "append", "insert", "forward", "training", "out",
          "out_", "x", "x_", "self", "super", "identity", "t", "torch", "nn", "F", "Tensor", "DropPath",
          "ZeroPadShortcut", "projection", "build", "OrderedDict", "downsample", "gate", "in_channels", "__class__",
          "__x", "_y", "print", "lambda", "match", "a", "a_", "se", "w", "stride"]
NAMES = st.one_of(st.sampled_from(TRICKY), st.from_regex(r"[a-z_][a-z0-9_]{0,4}", fullmatch=True))
SINGLE = ("policy", "pc", "ps", "p", "q", "m", "v1", "s", "u")  # names
DOTTED = ("key", "l1", "l2", "l3", "l4", "stage")  # labels: a name, then names or positions


@st.composite
def spec_names(draw) -> dict[str, str]:
    """Plain names everywhere but in a few places, where a tricky one (or a random one) goes."""
    names = {key: f"n{i}" for i, key in enumerate(SINGLE + DOTTED)}
    for key in draw(st.lists(st.sampled_from(SINGLE + DOTTED), min_size=1, max_size=3, unique=True)):
        names[key] = draw(NAMES)
        if key in DOTTED:
            rest = draw(st.lists(st.one_of(NAMES, st.sampled_from(["0", "1"])), max_size=2))
            names[key] = ".".join([names[key], *rest])
    if draw(st.booleans()):  # siblings in one container, keyed by position and by name: an nn.ModuleDict
        names["l1"], names["l2"] = f"{names['l1']}.0", f"{names['l1']}.{draw(NAMES)}"
    return names


NAMED = """
policy {policy}({pc}, {ps}) {{
    downsample.{key}: conv {pc} s={ps}
    downsample.1: bn
}}
block b({p}, stride = 1, {q} = 1) {{
    let {m} = {p} * {q}
    {l1}: conv {m} k3 s=stride p1
    {v1}: relu
    {s}: branch {{ sigmoid }}
    {l2}: conv {m} k1
    {u}: branch {{ {l3}: conv {m} k1; sigmoid }}
    mul {v1}
    mul {s}
    mul {u}
    {l4}: conv {p} k1
    add shortcut
}}
network n {{
    input 3x8x8
    classes 3
    stem {{ conv 4 k3 p1 }}
    stage {stage}: b(4, {q}=2) x 2
    stage layer2: b(8) x 1 stride 2 shortcut {policy}
    head {{ avgpool; fc classes }}
}}
"""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_names())
def test_every_name_check_accepts_builds_and_computes_the_graph(names: dict[str, str]) -> None:
    text = NAMED.format(**names)
    try:
        net = resdsl.loads(text, "named.rds")
    except ResdslError as exc:
        assert exc.render().startswith("named.rds:"), exc.render()
        return
    computes_its_graph(net)


def test_a_default_reading_the_block_index_is_passed_by_the_network() -> None:
    net = resdsl.loads("""
    block b(w, stride = 1, rate = 0.2 * block_index / num_blocks) {
        conv1: conv w k3 s=stride p1
        drop_path rate
        add shortcut
    }
    network n {
        input 3x8x8
        classes 3
        stem { conv 4 k3 p1 }
        stage layer1: b(4) x 2
        stage layer2: b(8) x 2 stride 2
        head { avgpool; fc classes }
    }
    """)
    source = net.torch_source()
    assert "self, in_channels: int, w: int, stride: int = 1, *, rate: float," in source
    model = net.to_torch(seed=0)
    rates = [m.rate for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates == [0.2 * i / 4 for i in range(4)]


def test_a_long_block_name_keeps_the_class_docstring_within_the_line_limit() -> None:
    name = "a_block_whose_name_alone_takes_most_of_a_line_of_generated_python_source"
    text = (f"block {name}(w, stride = 1) {{ conv1: conv w k3 s=stride p1; bn1: bn; add shortcut; relu }}\n"
            f"network n {{ input 3x8x8; classes 2; stem {{ conv 8 k3 p1 }}; stage s: {name}(8) x 5 stride 2\n"
            f"head {{ avgpool; fc classes }} }}\n")
    source = resdsl.loads(text, "long.rds").torch_source()
    assert not [line for line in source.splitlines() if len(line) > 110]
    namespace: dict = {}
    exec(compile(source, "long.py", "exec"), namespace)  # noqa: S102 -- our own generated source
    cls = next(v for k, v in namespace.items() if k.startswith("ABlock"))
    assert " ".join(cls.__doc__.split()).startswith(f"`{name}` block")
