"""The target registry (resdsl.targets): what `compile`, `bench` and the output names read of each
target, and a backend added by its own function plus one entry, with nothing else changed."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from resdsl import targets
from resdsl.diagnostics import ResdslError

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("compile", "check", "validate", "bench")


@pytest.mark.parametrize("target", list(targets.TARGETS.values()), ids=lambda t: t.name)
def test_every_function_an_entry_names_exists(target) -> None:
    # Resolved by name when a command runs: a typo would otherwise surface only on that target.
    for role in ROLES:
        where = getattr(target, role)
        if where is None:
            continue
        module, _, name = where.partition(":")
        spec = importlib.util.find_spec(module)
        assert spec is not None, where
        source = Path(spec.origin).read_text(encoding="utf-8")
        assert f"\ndef {name}(" in source, where


def test_output_names_follow_the_entries() -> None:
    assert {t: str(targets.default_name("net", t)) for t in targets.TARGETS} == {
        "torch": "net.py", "onnx": "net.onnx", "llvm": "net.llvm.so", "cuda": "net.cuda.so"}
    cases = {"a/x.py": "torch", "x.ONNX": "onnx", "x.so": "llvm", "x.llvm.so": "llvm", "x.cuda.so": "cuda",
             None: "torch", "-": "torch"}
    assert {output: targets.target_for(output, None) for output in cases} == cases
    with pytest.raises(ResdslError) as caught:
        targets.target_for("x.llvm.so", "cuda")  # both shared libraries: only the name tells them apart
    assert caught.value.diagnostic.hint == "pass --target llvm, or name the output x.cuda.so"
    assert targets.target_for("x.so", "cuda") == "cuda"  # a plain .so is either library
    assert targets.target_for("x.py", "onnx") == "onnx"  # --target wins (compile refuses the mismatch)
    with pytest.raises(ResdslError) as caught:
        targets.target_for("net.bin", None)
    assert "cannot tell the target" in str(caught.value) and ".onnx (onnx)" in caught.value.render()
    assert targets.target_for("net.bin", "onnx") == "onnx"


def test_bench_rows_come_from_the_entries() -> None:
    assert targets.engines() == ("torch", "torch.compile", "onnxruntime", "openvino", "openvino-bf16", "tvm",
                                 "tvm-tuned")
    engines = ("torch.compile", "onnxruntime", "openvino", "openvino-bf16", "tvm-tuned")
    assert [targets.for_engine(e).name for e in engines] == ["torch", "onnx", "onnx", "onnx", "llvm"]


# A backend of its own: a plain-text listing of the graph's nodes, registered before the command
# line is imported (as a plugin would be), then reached by --target and by its output's suffix.
PLUGIN = """
import sys
from resdsl import targets

def compile_listing(job):
    nodes = job.net.graph.order()
    return targets.Output("".join(f"{n}\\n" for n in nodes), f"{len(nodes)} nodes")

def check_listing(graph):
    print("checked", graph.name, file=sys.stderr)

targets.TARGETS["listing"] = targets.Target(
    "listing", ".txt", "a text listing", compile="__main__:compile_listing", check="__main__:check_listing",
    names=(".txt",), weights=False)
from resdsl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_new_target_is_its_function_and_one_entry(tmp_path) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", PLUGIN, *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, check=False)
    out = tmp_path / "r.txt"
    done = run("compile", "resnet20", "-o", str(out))  # the target read from the suffix
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["checked resnet20",
                                        f"wrote {out} ({len(out.read_text().splitlines())} nodes)"]
    lines = out.read_text().splitlines()
    assert lines[:2] == ["<input>", "conv1"] and len(lines) == len(set(lines)) > 20
    done = run("compile", "resnet20", "--target", "listing", "-o", str(tmp_path / "r.onnx"))
    assert done.returncode == 1
    assert "asks for an ONNX model, but --target listing writes a text listing" in done.stderr
    done = run("compile", "resnet20", "--target", "listing", "--opset", "18", "-o", "-")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --opset applies to --target onnx, not listing"
