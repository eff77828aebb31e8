"""What `compile` writes and where: default names that never shadow each other in `import NETWORK`,
the target read from -o's suffix, and `--target llvm` applying the shipped tuning database."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from resdsl.cli import main
from resdsl.diagnostics import ResdslError
from resdsl.output import refuse_shadowing

HAS_TVM = importlib.util.find_spec("tvm") is not None
needs_tvm = pytest.mark.skipif(not HAS_TVM, reason="needs the tvm extra")
TINY = "network {name} {{\n    input 3x8x8\n    classes 3\n    stem {{ conv 4 k3 p1; relu }}\n    head {{ avgpool; fc classes }}\n}}\n"


def test_compile_follows_the_suffix(tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.rds").write_text(TINY.format(name="tiny"))
    assert main(["compile", "tiny.rds", "-o", "t.onnx"]) == 0
    assert "ONNX opset" in capsys.readouterr().err
    import onnx
    onnx.checker.check_model(onnx.load(tmp_path / "t.onnx"))
    assert main(["compile", "tiny.rds"]) == 0  # no -o, no --target: torch, NETWORK.py
    assert "class " in (tmp_path / "tiny.py").read_text()
    assert main(["compile", "tiny.rds", "-o", "t.bin"]) == 1
    assert "cannot tell the target from its suffix" in capsys.readouterr().err
    assert not (tmp_path / "t.bin").exists()


@pytest.mark.parametrize("argv, message", [
    (["--target", "torch", "-o", "t.onnx"], "-o t.onnx asks for an ONNX model, but --target torch"),
    (["--target", "llvm", "-o", "t.cuda.so"], "-o t.cuda.so names a cuda library, but --target is llvm"),
    (["--target", "cuda", "-o", "t.llvm.so"], "-o t.llvm.so names a llvm library, but --target is cuda"),
    (["--target", "onnx", "--untuned"], "--untuned applies to --target llvm or cuda, not onnx"),
    (["-o", "t.so", "--tuned", "resnet18-llvm-znver3", "--untuned"], "--untuned builds a TVM library"),
])
def test_a_suffix_contradicting_target(tmp_path, monkeypatch, capsys, argv, message) -> None:
    if "t.onnx" not in argv:
        pytest.importorskip("tvm") if "onnx" not in argv else pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.rds").write_text(TINY.format(name="tiny"))
    assert main(["compile", "tiny.rds", *argv]) == 1
    assert message in capsys.readouterr().err
    assert not any(tmp_path.glob("t.*")) and not any(tmp_path.glob("tiny.*[!s]"))


def test_a_library_shadowing_a_module_is_refused(tmp_path) -> None:
    """x.so beside x.py: `import x` loads the library (extension modules come first)."""
    (tmp_path / "x.py").write_text("")
    for name in ("x.so", "x.abi3.so", importlib.machinery.EXTENSION_SUFFIXES[0].join(("x", ""))):
        with pytest.raises(ResdslError, match=r"`import x` there would load the library"):
            refuse_shadowing(tmp_path / name)
    refuse_shadowing(tmp_path / "x.llvm.so")  # a dotted stem is never a module
    refuse_shadowing(tmp_path / "y.so")
    (tmp_path / "x.py").unlink()
    (tmp_path / "z.so").write_bytes(b"")
    with pytest.raises(ResdslError, match=r"would load the library z.so, not the module z.py"):
        refuse_shadowing(tmp_path / "z.py")


def test_compile_refuses_a_module_beside_a_library(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.rds").write_text(TINY.format(name="tiny"))
    (tmp_path / "t.so").write_bytes(b"")
    assert main(["compile", "tiny.rds", "-o", "t.py"]) == 1
    assert "name the library t.llvm.so" in capsys.readouterr().err
    assert not (tmp_path / "t.py").exists()


@pytest.mark.tvm
def test_default_outputs_sit_together_and_import_loads_the_module(tmp_path, monkeypatch, capsys) -> None:
    """compile's default torch and llvm outputs in one directory: `import tiny` gets the .py."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.rds").write_text(TINY.format(name="tiny"))
    assert main(["compile", "tiny.rds"]) == 0
    assert main(["compile", "tiny.rds", "--target", "llvm"]) == 0
    err = capsys.readouterr().err
    assert "warning: no tuning records for tiny (no shipped database for it)" in err and "--untuned" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.llvm.so", "tiny.py", "tiny.rds"]
    found = subprocess.run([sys.executable, "-c", "import tiny; print(tiny.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, check=False)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).name == "tiny.py"
    from resdsl.tvm import build as tvm_build
    assert tvm_build.load_vm(tmp_path / "tiny.llvm.so")  # and the library is one TVM loads
    # Named x.so explicitly beside x.py it is refused, before any build.
    assert main(["compile", "tiny.rds", "-o", "tiny.so"]) == 1
    assert "`import tiny` there would load the library tiny.so" in capsys.readouterr().err


@pytest.fixture
def builds(monkeypatch):
    """compile's TVM build, recorded rather than run: (work_dir, lowering, batch) of each."""
    from resdsl.tvm import build as tvm_build
    seen = []
    monkeypatch.setattr(tvm_build, "relax_module", lambda graph, state, batch, lowering: (batch, lowering))
    monkeypatch.setattr(tvm_build, "build",
                        lambda mod, target, work_dir, lowering: seen.append((work_dir, lowering, mod[0])))
    monkeypatch.setattr(tvm_build, "export", lambda executable, path: Path(path).write_bytes(b"lib"))
    return seen


@pytest.mark.tvm
def test_llvm_applies_the_shipped_database_and_says_which(tmp_path, capsys, builds) -> None:
    from resdsl.tvm import databases
    from resdsl.tvm.target import host_cpu
    chosen = databases.choose("resnet18", host_cpu())
    assert chosen is not None  # a shipped database for resnet18 exists for any x86 host
    assert main(["compile", "resnet18", "-o", str(tmp_path / "r.so")]) == 0
    err = capsys.readouterr().err
    [(work_dir, lowering, batch)] = builds
    assert work_dir.path == chosen.path and lowering == chosen.lowering() and batch == chosen.report().batch
    assert f"note: applying the shipped database {chosen.name} (tuned on " in err
    assert "--untuned builds without one" in err and "warning" not in err
    if chosen.name.rsplit("-", 1)[1] != host_cpu():
        assert f"not this {host_cpu()}" in err
    # Named on the command line, it builds the same: the CPU given picks it.
    builds.clear()
    assert main(["compile", "resnet18", "--target", "llvm", "--cpu", "znver5", "-o", str(tmp_path / "r.so")]) == 0
    assert builds[0][0].name == "resnet18-llvm-znver5"
    assert "resnet18-llvm-znver5 (tuned on znver5" in capsys.readouterr().err


@pytest.mark.tvm
@pytest.mark.parametrize("argv, warning", [
    (["resnet18", "--untuned"], None),
    (["resnet20", "--target", "llvm"], "no tuning records for resnet20 (no shipped database for it)"),
    (["resnet20", "--target", "cuda"], "no tuning records for resnet20 on cuda"),
    (["resnet18", "--target", "llvm", "--layout", "nchw", "--no-winograd"],
     "the shipped database resnet18-llvm-"),
    (["resnet18", "--target", "llvm", "--batch", "4"], "were tuned at batch 1, 8, not 4"),
])
def test_untuned_builds_warn_unless_asked_for(tmp_path, capsys, builds, argv, warning) -> None:
    out = tmp_path / ("r.cuda.so" if "cuda" in argv else "r.so")
    assert main(["compile", *argv, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    [(work_dir, _, _)] = builds
    assert work_dir is None and "applying" not in err
    if warning is None:
        assert "warning" not in err
    else:
        assert err.startswith("warning: ") and warning in err and "this library runs untuned kernels" in err
        assert "resdsl tune resnet" in err and "--untuned" in err
