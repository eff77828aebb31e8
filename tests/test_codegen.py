"""Generated source: golden files, determinism across processes and hash seeds, no torch import,
and names that cannot shadow what the module needs."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import resdsl
from conftest import ROOT, check_golden
from resdsl.lower import MODULE_MEMBERS

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


def test_compile_does_not_import_torch() -> None:
    code = ("import sys; from resdsl.cli import main; "
            "rc = main(['compile', 'specs/resnet18.rds', '-o', '-']); "
            "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)


def test_reserved_labels_cover_nn_module_members() -> None:
    public = {name for name in dir(torch.nn.Module) if not name.startswith("_")}
    assert public <= MODULE_MEMBERS | {"register_full_backward_hook"}, sorted(public - MODULE_MEMBERS)


def test_generated_code_compiles_and_has_no_per_forward_logic() -> None:
    # The forward methods are straight-line: no loops or branches at run time.
    source = resdsl.load("specs/cifar/resnet56.rds").torch_source()
    compile(source, "resnet56.py", "exec")
    forwards = source.split("def forward")[1:]
    for body in forwards:
        body = body.split("\n\n")[0]
        assert " for " not in body and " if " not in body, body


def test_blocks_of_one_structure_share_a_class_with_the_blocks_parameters() -> None:
    from resdsl.backends.torch_codegen import generate
    source = generate(resdsl.load("specs/resnet50.rds").graph)
    assert source.count("\nclass ") == 4  # layer1.0, the other first blocks, the rest; the network
    assert "def __init__(self, in_channels: int, width: int) -> None:" in source
    assert "self.conv3 = nn.Conv2d(width, width * 4, kernel_size=1, bias=False)" in source
    assert "*[BottleneckBlock2(1024, 256) for _ in range(5)]" in source


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
    assert "self_: int" in source and "def __init__(self, self_" in source
    assert sum(p.numel() for p in model.parameters()) == net.params
