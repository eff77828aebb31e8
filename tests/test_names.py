"""Bundled models by name (resdsl/zoo.py), and the error a command gives when its extra is missing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import resdsl
from resdsl import zoo
from resdsl.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_every_bundled_spec_has_a_name_of_its_own():
    stems = [p.stem for pattern in ("*.rds", "cifar/*.rds") for p in (ROOT / "specs").glob(pattern)]
    assert [s for s, n in Counter(stems).items() if n > 1] == []
    assert set(zoo.bundled()) == set(stems)
    assert "add_first_layer" not in zoo.bundled()  # specs/bad fails on purpose: not a model


def test_load_by_name():
    net = resdsl.load("resnet50")
    assert (net.name, net.params) == ("resnet50", 25557032)
    assert resdsl.load("resnet20").params == 269722  # from specs/cifar/


def test_list_models_takes_a_shell_pattern():
    assert resdsl.list_models("resnet5?") == ["resnet50", "resnet56"]
    assert "wrn28_10" in resdsl.list_models()
    assert resdsl.list_models("nothing*") == []


def test_a_file_wins_over_a_name(tmp_path, monkeypatch):
    (tmp_path / "resnet50").write_text((ROOT / "tests/specs/cifar_tiny.rds").read_text())
    monkeypatch.chdir(tmp_path)
    assert resdsl.load("resnet50").name == "cifar_tiny"


def test_a_typo_names_the_closest_models(capsys):
    assert main(["check", "resnet5O"]) == 1
    err = capsys.readouterr().err
    assert "error: no file resnet5O, and no bundled model of that name" in err
    assert "help: did you mean resnet50 or " in err  # an O read as a 0 ranks the model meant first
    assert "Traceback" not in err


def test_a_missing_path_is_still_file_not_found(capsys):
    assert main(["check", "nowhere/resnet50.rds"]) == 1
    assert "file not found: nowhere/resnet50.rds" in capsys.readouterr().err


def test_check_and_compile_by_name(capsys, tmp_path):
    assert main(["check", "resnet50"]) == 0
    assert "OK resnet50: 3x224x224 -> 1000 classes" in capsys.readouterr().out
    out = tmp_path / "r20.py"
    assert main(["compile", "resnet20", "-o", str(out)]) == 0
    assert "From resnet20.rds." in out.read_text()


def test_list_prints_each_model_with_its_facts(capsys):
    assert main(["list", "resnet*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "params", "GMACs", "input"]
    assert "resnet50 25,557,032 4.09 3x224x224 torchvision resnet50" in [" ".join(line.split()) for line in lines]
    assert not any(line.startswith("vgg") for line in lines)
    assert main(["list", "--json", "resnet20"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["name"], row["params"], row["input"]) == ("resnet20", 269722, "3x32x32")


def test_a_pattern_matching_nothing_is_an_error(capsys):
    assert main(["list", "zz*"]) == 1
    assert "no bundled model matches zz*" in capsys.readouterr().err


# A module set to None in sys.modules cannot be imported: the machine without that extra.
@pytest.mark.parametrize("argv, hidden, extra", [
    (["compile", "resnet20", "--target", "onnx", "-o", "{tmp}/x.onnx"], "onnx", "onnx"),
    (["compile", "resnet20", "--target", "onnx", "-o", "{tmp}/x.onnx"], "onnxruntime", "onnx"),
    (["compile", "resnet20", "--target", "llvm", "-o", "{tmp}/x.so"], "tvm", "tvm"),
    (["tune", "resnet20", "--work-dir", "{tmp}/w"], "tvm", "tvm"),
    (["bench", "resnet20", "--engines", "torch,onnxruntime"], "onnxruntime", "onnx"),
    (["bench", "resnet20", "--engines", "tvm"], "tvm", "tvm"),
    (["bench", "resnet20", "--engines", "torch"], "torch", "torch"),
    (["train", "resnet20", "--data", "digits", "--out", "{tmp}/run"], "sklearn", "train"),
    (["train", "resnet20", "--data", "folder:{tmp}", "--out", "{tmp}/run"], "PIL", "train"),
    (["train", "resnet20", "--data", "digits", "--out", "{tmp}/run"], "torch", "train"),
    (["plot", "{tmp}/run", "-o", "{tmp}/p.png"], "matplotlib", "train"),
    (["compile", "resnet20", "--target", "onnx", "-o", "{tmp}/x.onnx"], "torch", "onnx"),
])
def test_a_missing_extra_is_named_with_its_pip_line(argv, hidden, extra, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, hidden, None)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"   = help: pip install 'resdsl[{extra}]'"
    assert f"needs {hidden}" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_to_torch_without_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(resdsl.ResdslError) as caught:
        resdsl.load("resnet20").to_torch()
    assert caught.value.diagnostic.hint == "pip install 'resdsl[torch]'"


def test_help_and_check_by_name_do_not_import_torch():
    # `import torch` takes seconds: a spec check must stay quicker than it.
    probe = ("import sys\nfrom resdsl.cli import main\n"
             "codes = [main(['--help']), main(['check', 'resnet50']), main(['list', 'resnet1*'])]\n"
             "print(codes, [m for m in ('torch', 'numpy', 'onnx', 'tvm') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)
    assert done.stdout.splitlines()[-1] == "[0, 0, 0] []", done.stderr


def test_show_takes_a_name_too(capsys):
    assert main(["show", "resnet20"]) == 0
    assert "network resnet20" in capsys.readouterr().out


def test_list_names_the_library_a_model_reproduces(tmp_path, monkeypatch, capsys):
    # specs/peers.json is optional: a model without an entry leaves the column blank.
    (tmp_path / "cifar").mkdir()
    shutil.copy(ROOT / "specs/cifar/resnet20.rds", tmp_path / "cifar")
    shutil.copy(ROOT / "specs/resnet18.rds", tmp_path)
    shutil.copy(ROOT / "specs/resnet34.rds", tmp_path)
    (tmp_path / "peers.json").write_text(json.dumps({"tv_resnet18": "specs/resnet18.rds",
                                                      "timm_resnet18": "specs/resnet18.rds",
                                                      "timm_resnet34": "specs/resnet34.rds"}))
    monkeypatch.setattr(zoo, "specs_root", lambda: tmp_path)
    assert main(["list"]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert lines == ["name params GMACs input reproduces",
                     "resnet18 11,689,512 1.81 3x224x224 timm resnet18, torchvision resnet18",
                     "resnet20 269,722 0.04 3x32x32",
                     "resnet34 21,797,672 3.66 3x224x224 timm resnet34"]
