"""Join syntax is the grammar's (`join`/`shortcut_join`): joins name any value a block has, a
dotted label (`f.a`) or one that looks like a short attribute (`p1`), and the grammar's join ops
are the op definitions' joins."""
from __future__ import annotations

import re

import pytest
import torch
from conftest import ROOT

import resdsl
from resdsl.formatter import format_source
from resdsl.ops import JOINS

NET = """
block b(w) {{
    conv1: conv w k3 p1
{body}
}}
network n {{
    input 3x8x8
    classes 4
    stem {{ conv1: conv 4 k3 p1 }}
    stage layer1: b(4) x 1
    head {{ avgpool; fc classes }}
}}
"""


def _module(body: str) -> torch.nn.Module:
    module = resdsl.loads(NET.format(body=body), "n.rds").to_torch(seed=0).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module


def test_a_join_names_a_dotted_label_inside_a_branch() -> None:
    module = _module("    f: branch { a: conv w k3 p1; b: relu }\n    concat f.a f")
    block, x = module.layer1[0], torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = block.conv1(x)
        a = block.f.a(h)
        torch.testing.assert_close(block(x), torch.cat([a, torch.relu(a)], 1))


def test_a_join_names_a_label_that_reads_like_a_short_attribute() -> None:
    module = _module("    p1: branch { conv w k3 p1 }\n    p2: branch input { conv w }\n    concat p1 p2")
    assert module.layer1[0](torch.randn(1, 4, 8, 8)).shape == (1, 8, 8, 8)


@pytest.mark.parametrize("join", ["add shortcut", "add shortcut C", "sum: add shortcut B from pre",
                                  "add shortcut from pre", "mul g.s", "out: concat pre g.s"])
def test_fmt_writes_each_join_form_back(join: str) -> None:
    body = f"    pre: relu\n    g: branch {{ avgpool; s: sigmoid }}\n    {join}"
    text = NET.format(body=body)
    formatted = format_source(text, "n.rds")
    assert f"    {join}\n" in formatted and format_source(formatted, "n.rds") == formatted


def test_the_grammars_join_ops_are_the_op_definitions_joins() -> None:
    grammar = (ROOT / "grammars" / "resdsl.lark").read_text(encoding="utf-8")
    ops = re.search(r"^JOIN\.\d+: /\(([a-z|]+)\)", grammar, re.MULTILINE).group(1).split("|")
    assert sorted(ops) == sorted(JOINS)
