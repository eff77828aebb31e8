"""`--set classes=N`, `--set input=CxHxW` and the API's `classes=`, `input=`, `num_classes=`,
`in_chans=`: they replace the network's header on every command; a value that is not one, or a head
that cannot take it, is an error located at the spec's header (issue #30, item 3)."""
from __future__ import annotations

from pathlib import Path

import pytest

import resdsl
from resdsl.cli import main

RESNET50_PARAMS = 25_557_032  # torchvision's resnet50 (docs/REFERENCE.md)
FC_IN = 2048


def _resnet50_params(classes: int) -> int:
    """torchvision's count, its fc (2048 weights and a bias per class) resized by hand."""
    return RESNET50_PARAMS - 1000 * (FC_IN + 1) + classes * (FC_IN + 1)


def test_classes_changes_the_head_and_its_params() -> None:
    net = resdsl.load("specs/resnet50.rds", classes=10)
    assert net.graph.classes == 10
    assert net.params == _resnet50_params(10) == 23_528_522


def test_set_overrides_and_keywords_agree() -> None:
    by_set = resdsl.load("specs/resnet50.rds", {"classes": "10", "input": "1x64x64"})
    by_keyword = resdsl.load("specs/resnet50.rds", classes=10, input=(1, 64, 64))
    by_timm = resdsl.load("specs/resnet50.rds", num_classes=10, in_chans=1, input="64x64")
    for net in (by_set, by_keyword, by_timm):
        assert net.summary()["input"] == [1, 64, 64]
        assert net.params == by_set.params
    # one input channel instead of three: conv1 loses 64 * 2 * 7 * 7 weights
    assert by_set.params == _resnet50_params(10) - 64 * 2 * 7 * 7


def test_generated_module_follows_the_overrides() -> None:
    torch = pytest.importorskip("torch")
    net = resdsl.load("specs/resnet50.rds", classes=10, input=(1, 64, 64))
    model = net.to_torch(seed=0).eval()
    state = model.state_dict()
    assert tuple(state["fc.weight"].shape) == (10, FC_IN)
    assert tuple(state["conv1.weight"].shape) == (64, 1, 7, 7)
    assert sum(p.numel() for p in model.parameters()) == net.params
    with torch.no_grad():
        assert tuple(model(torch.zeros(2, 1, 64, 64)).shape) == (2, 10)
    source = net.torch_source()
    assert "10" in source


def test_hxw_keeps_the_channels() -> None:
    net = resdsl.load("specs/resnet50.rds", {"input": "32x48"})
    assert net.summary()["input"] == [3, 32, 48]
    assert net.params == RESNET50_PARAMS


def test_lets_still_work_beside_the_header(tmp_path: Path) -> None:
    spec = tmp_path / "w.rds"
    spec.write_text("network w {\n    input 3x32x32\n    classes 10\n    let width = 8\n"
                    "    stem { conv width k3 p1 }\n    head { avgpool; fc classes }\n}\n")
    net = resdsl.load(spec, {"width": "4", "classes": "3"})
    assert net.params == 4 * 3 * 9 + 4 * 3 + 3
    with pytest.raises(resdsl.ResdslError, match="no `let nope`"):
        resdsl.load(spec, {"nope": "1"})


def test_cli_check_prints_the_new_facts(capsys) -> None:
    assert main(["check", "specs/resnet50.rds", "--set", "classes=10", "--set", "input=1x28x28"]) == 0
    out = capsys.readouterr().out
    assert "resnet50: 1x28x28 -> 10 classes" in out
    assert f"{_resnet50_params(10) - 64 * 2 * 7 * 7:,} params" in out


def test_cli_by_name_and_other_commands(tmp_path: Path, capsys) -> None:
    assert main(["check", "resnet50", "--set", "classes=10"]) == 0
    assert "-> 10 classes" in capsys.readouterr().out
    out = tmp_path / "m.py"
    assert main(["compile", "specs/resnet50.rds", "--set", "classes=10", "-o", str(out)]) == 0
    assert "10" in out.read_text()


@pytest.mark.parametrize("value, column, message", [
    ("classes=0", 13, "`--set classes=0`: the number of classes must be a positive whole number"),
    ("classes=ten", 13, "`--set classes=ten`: the number of classes must be a positive whole number"),
    ("classes=-3", 13, "`--set classes=-3`: the number of classes must be a positive whole number"),
    ("input=28", 5, "`--set input=28`: expected CxHxW"),
    ("input=1x0x28", 5, "`--set input=1x0x28`: expected CxHxW"),
    ("input=1x28x28x2", 5, "`--set input=1x28x28x2`: expected CxHxW"),
    ("input=axb", 5, "`--set input=axb`: expected CxHxW"),
])
def test_bad_values_are_located_at_the_header(value, column, message, capsys) -> None:
    assert main(["check", "specs/resnet50.rds", "--set", value]) == 1
    err = capsys.readouterr().err
    line = 4 if value.startswith("classes") else 3
    assert err.startswith(f"specs/resnet50.rds:{line}:{column}: error: {message}"), err
    assert "= help:" in err and "Traceback" not in err


def test_a_head_with_a_fixed_class_count_is_a_located_error(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "fixed.rds"
    spec.write_text("network fixed {\n    input 3x32x32\n    classes 10\n"
                    "    stem { conv 16 k3 p1 }\n    head { avgpool; fc 10 }\n}\n")
    assert main(["check", str(spec)]) == 0
    capsys.readouterr()
    assert main(["check", str(spec), "--set", "classes=5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{spec}:5:21: error: `--set classes=5`: the head cannot take 5 classes: it outputs "
                          "10 values per image whatever `classes` says"), err
    assert f"= note: `--set classes=5` replaced the spec's `classes 10` ({spec}:3:13)" in err
    assert "= help: end the head with `fc classes`" in err
    with pytest.raises(resdsl.ResdslError, match="^`classes=5`: the head cannot take 5 classes"):
        resdsl.load(spec, classes=5)
    assert resdsl.load(spec, classes=10).params == 16 * 3 * 9 + 16 * 10 + 10  # the same count is fine (conv: no bias)


def test_an_input_too_small_for_the_strides_names_the_override(capsys) -> None:
    assert main(["check", "specs/vgg16.rds", "--set", "input=3x16x16"]) == 1
    err = capsys.readouterr().err
    assert "collapses a resolution of 1 below 1" in err
    assert "= note: `--set input=3x16x16` replaced the spec's `input 3x224x224` with 3x16x16 (specs/vgg16.rds:6:5)" \
        in err


def test_a_backbone_has_no_classes_to_override(capsys) -> None:
    assert main(["check", "specs/resnet50_backbone.rds", "--set", "classes=5"]) == 1
    err = capsys.readouterr().err
    assert "has no class vector to resize" in err and "specs/resnet50_backbone.rds:7:5" in err
    net = resdsl.load("specs/resnet50_backbone.rds", input=(1, 64, 64))  # its input may change
    assert net.summary()["input"] == [1, 64, 64]


def test_api_keyword_errors() -> None:
    with pytest.raises(resdsl.ResdslError, match="one setting"):
        resdsl.load("specs/resnet50.rds", classes=10, num_classes=10)
    with pytest.raises(resdsl.ResdslError, match="given twice"):
        resdsl.load("specs/resnet50.rds", {"classes": "10"}, classes=10)
    with pytest.raises(resdsl.ResdslError, match="^`input=\\(0, 32, 32\\)`: expected CxHxW"):
        resdsl.load("specs/resnet50.rds", input=(0, 32, 32))
    with pytest.raises(resdsl.ResdslError, match="^`in_chans=0`: the number of input channels"):
        resdsl.load("specs/resnet50.rds", in_chans=0)
    with pytest.raises(resdsl.ResdslError, match="^`classes=True`"):
        resdsl.load("specs/resnet50.rds", classes=True)
    assert resdsl.load("specs/resnet50.rds", input=(32, 32)).summary()["input"] == [3, 32, 32]  # HxW


def test_the_network_records_its_overrides() -> None:
    net = resdsl.load("specs/resnet50.rds", num_classes=10, in_chans=1)
    assert net.overrides == {"classes": "10", "input": "1x224x224"}
    assert resdsl.load("specs/resnet50.rds").overrides == {}
    text = "network t {\n    input 3x8x8\n    classes 2\n    let w = 4\n    stem { conv w k3 p1 }\n" \
           "    head { avgpool; fc classes }\n}\n"
    net = resdsl.loads(text, overrides={"w": "2", "input": "1x8x8"}, classes=3)
    assert net.overrides == {"w": "2", "classes": "3", "input": "1x8x8"}
    assert net.params == 2 * 9 + 2 * 3 + 3
