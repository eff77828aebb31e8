"""`resdsl summary`: torchinfo-style roll-ups by depth, activation memory, and whole names in pipes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

import resdsl
from resdsl.cli import main
from resdsl.stats import layer_stats
from resdsl.summary import memory_lines, rows, summary_data

R50_PARAMS, R50_MACS = 25_557_032, 4_089_184_256


@pytest.fixture(scope="module")
def r50():
    return resdsl.load("resnet50").graph


def test_depth_1_is_stem_stages_and_head_summing_to_the_network(r50) -> None:
    top = rows(r50, 1)
    assert [r.name for r in top] == ["input", "conv1", "bn1", "relu", "maxpool",
                                     "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    assert sum(r.params for r in top) == R50_PARAMS and sum(r.macs for r in top) == R50_MACS
    stages = {r.name: r for r in top if r.op == "stage"}
    assert list(stages) == ["layer1", "layer2", "layer3", "layer4"]
    assert stages["layer1"].shape == (256, 56, 56) and stages["layer4"].shape == (2048, 7, 7)  # last layer's
    assert stages["layer1"].layers == 3 * 10 + 2  # 3 bottlenecks of 10 layers + the projection's conv and BN
    assert stages["layer4"].params == 14_964_736 and stages["layer4"].macs == 809_238_528


def test_depth_2_has_one_row_per_bottleneck(r50) -> None:
    blocks = [r for r in rows(r50, 2) if r.op == "bottleneck"]
    assert [sum(r.name.startswith(f"layer{i}.") for r in blocks) for i in (1, 2, 3, 4)] == [3, 4, 6, 3]
    assert len(blocks) == 16
    first = next(r for r in blocks if r.name == "layer1.0")
    assert first.params == 75_008 and first.shape == (256, 56, 56)  # with its projection shortcut
    assert sum(r.params for r in rows(r50, 2)) == R50_PARAMS


def test_depth_0_is_the_network_and_no_depth_is_every_layer(r50) -> None:
    (net,) = rows(r50, 0)
    assert (net.name, net.op, net.params, net.macs, net.shape) == \
        ("resnet50", "network", R50_PARAMS, R50_MACS, (1000,))
    every = rows(r50)
    assert [r.name for r in every] == [r.name for r in layer_stats(r50)] and len(every) == 175
    depth3 = [r.name for r in rows(r50, 3)]
    assert depth3[5] == "layer1.0.conv1" and "layer1.0.downsample" in depth3
    assert [r.name for r in rows(r50, 4)] == [r.name for r in every]  # the deepest name has 4 parts
    for depth in (0, 1, 2, 3):  # a roll-up hides nothing: bytes add up at every depth
        assert sum(r.bytes for r in rows(r50, depth)) == sum(r.bytes for r in every)
    with pytest.raises(ValueError):
        rows(r50, -1)


def test_activation_memory_per_layer_and_torchinfo_totals(r50) -> None:
    by_name = {r.name: r for r in rows(r50)}
    assert by_name["conv1"].bytes == 64 * 112 * 112 * 4 == 3_211_264
    assert by_name["input"].bytes == 3 * 224 * 224 * 4 and by_name["fc"].bytes == 4000
    mem = summary_data(r50)["memory"]
    assert mem["params"] == 4 * R50_PARAMS and mem["input"] == 602_112
    assert mem["activations"] == sum(r.bytes for r in rows(r50) if r.op != "input")
    assert mem["total"] == mem["input"] + mem["forward_backward"] + mem["params"]
    # torchinfo's printed figures for torchvision's resnet50 and resnet152 (its README)
    assert memory_lines(mem)[:4] == ["Input size (MB): 0.60", "Forward/backward pass size (MB): 177.83",
                                     "Params size (MB): 102.23", "Estimated Total Size (MB): 280.66"]
    r152 = summary_data(resdsl.load("resnet152").graph)["memory"]
    assert memory_lines(r152)[1:4] == ["Forward/backward pass size (MB): 360.87", "Params size (MB): 240.77",
                                       "Estimated Total Size (MB): 602.25"]


def _piped(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "resdsl", "summary", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return done.stdout


def test_piped_output_keeps_whole_names() -> None:
    out = _piped("resnetv2_50")
    lines = out.splitlines()
    assert any(line.startswith("stages.0.blocks.0.downsample.conv ") for line in lines)  # timm's longest
    assert "…" not in out and max(map(len, lines)) > 80  # wider than the 80 columns rich assumed
    assert "Forward/backward pass size (MB): 160.97" in lines
    r50 = _piped("resnet50", "--depth", "2").splitlines()
    assert r50[0] == "resnet50: 25,557,032 params, 4.09 GMACs"
    assert r50[1].split() == ["layer", "op", "output", "params", "MACs", "memory"]
    assert "layer1.0  bottleneck  256x56x56      75,008  231,211,008  24,084,480" in r50
    assert sum(line.split()[1] == "bottleneck" for line in r50[3:]) == 16
    assert any(line.split()[0] == "layer1.0.downsample.0" for line in _piped("resnet50").splitlines())


def test_json_keeps_every_layer_whatever_the_depth(r50) -> None:
    data = json.loads(_piped("resnet50", "--json", "--depth", "1"))
    assert len(data["layers"]) == 175 and data["layers"][1] == {
        "name": "conv1", "op": "conv", "shape": [64, 112, 112], "params": 9408, "macs": 118_013_952,
        "bytes": 3_211_264}
    assert data["depth"] == 1
    assert [r["name"] for r in data["rows"]][5:9] == ["layer1", "layer2", "layer3", "layer4"]
    assert sum(r["params"] for r in data["rows"]) == data["params"] == R50_PARAMS
    assert data["memory"] == {"input": 602_112, "activations": 150_239_136, "forward_backward": 177_831_744,
                              "params": 102_228_128, "total": 280_661_984}
    plain = json.loads(_piped("resnet50", "--json"))
    assert "rows" not in plain and "depth" not in plain and plain["layers"] == data["layers"]


def test_terminal_folds_long_names_and_falls_back_to_plain_when_too_narrow(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["summary", "resnetv2_50", "--depth", "5"]) == 0
    out = capsys.readouterr().out
    assert "┃" in out and "│ stages.0.blocks.0.downsample │ group " in out  # rich, wide enough: whole
    assert "stages.0.blocks.0.downsample.conv" not in out  # 6 parts: rolled up at depth 5
    monkeypatch.setenv("COLUMNS", "50")
    assert main(["summary", "resnetv2_50"]) == 0
    out = capsys.readouterr().out
    assert "┃" not in out and "stages.0.blocks.0.downsample.conv " in out  # too narrow: plain, nothing cut


def test_depth_must_not_be_negative(capsys) -> None:
    assert main(["summary", "resnet50", "--depth", "-1"]) != 0
    assert "--depth" in capsys.readouterr().err
