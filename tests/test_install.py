"""`pip install resdsl` as a user does it: a wheel built from this checkout, installed with torch alone
into a fresh venv, run from another directory. What the checkout supplies by sitting beside the
package (grammar, templates, specs, databases) must be in the wheel, and a missing extra must be a
user error naming its pip line, not a traceback.

Everything is installed from pip's configured index (the Makefile's own source of packages), once
for the module: torch's unpacking is most of the time.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"  # the Makefile's pin: a bare `torch` could pull a CUDA build


def _pip(*args: str, cwd: Path) -> None:
    # --no-compile: byte-compiling torch's files would double the install's time, for nothing here.
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the venv's bin directory)."""
    base = tmp_path_factory.mktemp("install")
    _pip("wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(ROOT), cwd=base)
    [wheel] = (base / "dist").glob("resdsl-*.whl")
    venv = base / "venv"
    # No pip inside: this interpreter's pip installs into it (--python), a few seconds saved.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    _pip("--python", str(python), "install", "-q", "--no-compile", TORCH, cwd=base)
    _pip("--python", str(python), "install", "-q", "--no-compile", str(wheel), cwd=base)
    return wheel, venv / "bin"


def _run(bin_dir: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    # Nothing of the checkout may leak in: no PYTHONPATH, and a directory outside it.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_wheel_carries_what_the_checkout_has_beside_the_package(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for needed in ("resdsl/grammars/resdsl.lark", "resdsl/codegen_templates/torch_module.py.j2",
                   "resdsl/prelude.rds", "resdsl/specs/resnet50.rds", "resdsl/specs/cifar/resnet20.rds",
                   "resdsl/tvm/databases/resnet50-llvm-znver3/report.json"):
        assert needed in names
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "resdsl/tvm/databases").rglob("*") if p.is_file()}
    assert shipped <= names
    assert not [n for n in names if "/specs/bad/" in n]  # the error corpus is not a model
    assert "Requires-Dist: numpy" in metadata
    for extra in ("onnx", "tvm", "train", "all", "test"):
        assert f"Provides-Extra: {extra}" in metadata


def test_core_commands_work_from_another_directory(installed, tmp_path):
    _, bin_dir = installed
    shutil.copy(ROOT / "specs/cifar/resnet20.rds", tmp_path / "mine.rds")
    done = _run(bin_dir, tmp_path, "resdsl", "check", "mine.rds")
    assert done.returncode == 0, done.stderr
    assert "OK resnet20: 3x32x32 -> 10 classes" in done.stdout and "269,722 params" in done.stdout
    done = _run(bin_dir, tmp_path, "resdsl", "summary", "--json", "mine.rds")
    assert done.returncode == 0 and '"params": 269722' in done.stdout, done.stderr
    done = _run(bin_dir, tmp_path, "resdsl", "compile", "mine.rds", "--target", "torch", "-o", "net20.py")
    assert done.returncode == 0, done.stderr
    probe = "import torch, net20; print(tuple(net20.build(seed=0).eval()(torch.zeros(2, 3, 32, 32)).shape))"
    done = _run(bin_dir, tmp_path, "python", "-c", probe)
    assert done.stdout.strip() == "(2, 10)", done.stderr


def test_bundled_models_by_name_from_the_wheel(installed, tmp_path):
    _, bin_dir = installed
    done = _run(bin_dir, tmp_path, "resdsl", "check", "resnet50")
    assert done.returncode == 0 and "25,557,032 params" in done.stdout, done.stderr
    assert "site-packages" in done.stdout  # read from the package, not from a checkout
    done = _run(bin_dir, tmp_path, "resdsl", "list", "resnet5?")
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["name", "resnet50", "resnet56"]
    done = _run(bin_dir, tmp_path, "python", "-c", "import resdsl; print(resdsl.load('resnet20').params)")
    assert done.stdout.strip() == "269722", done.stderr


@pytest.mark.parametrize("argv, extra", [
    (("compile", "resnet20", "--target", "onnx"), "onnx"),
    (("compile", "resnet20", "--target", "llvm"), "tvm"),
    (("train", "resnet20", "--data", "digits", "--out", "run"), "train"),
    (("plot", "run", "-o", "p.png"), "train"),
])
def test_a_command_whose_extra_is_missing_names_its_pip_line(installed, tmp_path, argv, extra):
    _, bin_dir = installed
    done = _run(bin_dir, tmp_path, "resdsl", *argv)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == f"   = help: pip install 'resdsl[{extra}]'"
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written
