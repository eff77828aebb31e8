"""`resdsl ir`: the textual IR from the command line, after lowering and after each pass."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from resdsl.cli import main
from resdsl.passes import pass_names

NODE = re.compile(r"^\s*%(\S+) = (\w+)\(")


def _ir(capsys, *args: str) -> str:
    assert main(["ir", *args]) == 0
    return capsys.readouterr().out


def _nodes(text: str) -> dict[str, str]:
    return {m[1]: m[2] for m in map(NODE.match, text.splitlines()) if m}


def test_after_lower_has_no_shapes_and_no_inserted_shortcuts(capsys):
    text = _ir(capsys, "specs/resnet18.rds", "--after", "lower")
    assert " : " not in text  # shapes come from the first pass
    assert not any(".downsample." in name for name in _nodes(text))


def test_legalize_shortcuts_adds_the_three_torchvision_projections(capsys):
    before = _nodes(_ir(capsys, "specs/resnet18.rds", "--after", "infer-shapes"))
    after_text = _ir(capsys, "specs/resnet18.rds", "--after", "legalize-shortcuts")
    after = _nodes(after_text)
    added = sorted(set(after) - set(before))
    # ResNet-18 halves resolution and doubles filters at layer2/3/4.0: a 1x1 conv + BN each (option B).
    assert added == [f"layer{i}.0.downsample.{j}" for i in (2, 3, 4) for j in (0, 1)]
    assert [after[n] for n in added] == ["conv", "bn"] * 3
    for line in after_text.splitlines():
        if ".downsample." in line.split("=")[0]:
            assert line.endswith("role=projection"), line
    assert "%layer2.0.downsample.0 = conv(%layer1.1.act2) {out=128, stride=2} : 128x28x28" in after_text


def test_default_is_the_whole_pipeline_and_every_pass_can_be_named(capsys):
    whole = _ir(capsys, "specs/cifar/resnet20.rds")
    assert whole == _ir(capsys, "specs/cifar/resnet20.rds", "--after", pass_names()[-1])
    # option A: a parameter-free pad where resolution halves, nothing at stride 1
    assert len(re.findall(r"= pad\(.*role=pad$", whole, re.MULTILINE)) == 2


def test_locations_name_the_line_the_spec_wrote(capsys):
    text = _ir(capsys, "specs/resnet18.rds", "--locations")
    fc = next(line for line in text.splitlines() if line.lstrip().startswith("%fc ="))
    spec = Path("specs/resnet18.rds").read_text().splitlines()
    line, col = map(int, re.search(r':(\d+):(\d+)\)$', fc).groups())
    assert spec[line - 1][col - 1:].startswith("fc classes")


@pytest.mark.parametrize("after", ["bogus", "decompose-everything"])
def test_an_unknown_pass_is_a_usage_error(capsys, after):
    assert main(["ir", "specs/resnet18.rds", "--after", after]) != 0
    assert "lower" in capsys.readouterr().err


def test_the_inference_legalizations_can_be_read_too(capsys):
    whole = _nodes(_ir(capsys, "specs/cifar/highway20.rds"))
    onnx = _nodes(_ir(capsys, "specs/cifar/highway20.rds", "--after", "decompose"))
    relax = _nodes(_ir(capsys, "specs/cifar/highway20.rds", "--after", "fold-bn"))
    gated = [n for n, op in whole.items() if op == "add"]
    assert len(gated) == 9  # 3 stages of 3 highway blocks
    for add in gated:  # x + T * (F - x), the add keeping its name
        assert (onnx[f"{add}.t"], onnx[f"{add}.diff"], onnx[f"{add}.mix"], onnx[add]) == ("sigmoid", "sub", "mul", "add")
    assert "bn" in onnx.values() and "bn" not in relax.values()  # every BN follows a conv: all fold
    assert len(relax) == len(onnx) - list(onnx.values()).count("bn")
