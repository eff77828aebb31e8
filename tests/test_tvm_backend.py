"""The TVM targets (llvm, cuda) compute what the torch backend computes, for the same weights."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import resdsl
from conftest import ROOT, TEST_SPECS
from resdsl.backends.weights import load_weights
from resdsl.tvm import build as tvm_build
from resdsl.tvm.lowering import Lowering
from resdsl.tvm.target import make_target
from test_onnx_backend import NUMERIC_SPECS, randomize_bn, reference, rel_err

pytestmark = pytest.mark.tvm


# The deepest CIFAR nets and those whose blocks a shallower one already has take minutes to
# build: they run with `make test-slow` (pytest -m slow), not in `make test`'s 30-minute budget.
DEEP = {"resnet1202.rds", "preact_resnet1001.rds", "resnet32.rds", "resnet44.rds", "resnet110.rds"}
TVM_NUMERIC_SPECS = [pytest.param(s, marks=pytest.mark.slow) if s.name in DEEP else s for s in NUMERIC_SPECS]


@pytest.mark.parametrize("spec", TVM_NUMERIC_SPECS, ids=str)
def test_tvm_llvm_computes_what_torch_does(spec) -> None:
    import tvm
    net, weights, x, expected = reference(spec)
    # What `compile --target llvm` builds (NHWC).
    lowering = Lowering.default("llvm")
    executable = tvm_build.build(tvm_build.relax_module(net.graph, weights, 1, lowering), make_target("llvm"))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x))
    got = [t.numpy() for t in got] if net.graph.outputs else got.numpy()  # named outputs: a tuple
    assert rel_err(got, expected) < 1e-4


FC_ON_A_MAP = """
network fc_on_a_map {
    input 3x12x10
    classes 7
    stem { conv1: conv 8 k3 p1; bn1: bn; relu }
    stage layer1: basic(8) x 1
    stage layer2: basic(16) x 1 stride 2
    head { fc classes }
}
"""


# 3x3 convs of 136x136 channels (wider than 128x128: Winograd F(2x2, 3x3) with --wide-winograd)
# beside the stem's narrow one (F(4x4, 3x3)), on a 9x7 map that neither tile size divides.


WIDE_ON_AN_ODD_MAP = """
network wide_on_an_odd_map {
    input 3x9x7
    classes 5
    stem { conv1: conv 136 k3 p1; bn1: bn; relu }
    stage layer1: basic(136) x 1
    head { fc classes }
}
"""


# ResNeXt's grouped bottlenecks (32 groups of 4) on a CIFAR-sized input: the kernels of
# resnext50_32x4d's first two stages, without its 224x224 build time (that one is `slow`).
RESNEXT_SMALL = """
network resnext_small {
    input 3x32x32
    classes 10
    stem { conv1: conv 64 k3 p1; bn1: bn; relu }
    stage layer1: bottleneck(64, groups=32, width_per_group=4) x 1
    stage layer2: bottleneck(128, groups=32, width_per_group=4) x 1 stride 2
    head { avgpool; fc classes }
}
"""


@pytest.mark.parametrize("layout,winograd", [("NCHW", False), ("NHWC", False), ("NHWC", True)])
@pytest.mark.parametrize("spec", [
    "specs/cifar/resnet20.rds", "specs/cifar/highway20.rds",
    pytest.param(("specs/cifar/preact_resnet164.rds", {"n": "2"}), id="preact_resnet164[n=2]"),
    pytest.param(RESNEXT_SMALL, id="resnext_small"),
    pytest.param("specs/resnext50_32x4d.rds", marks=pytest.mark.slow),
    pytest.param(FC_ON_A_MAP, id="fc_on_a_map")])
def test_every_lowering_computes_the_same_network(spec, layout, winograd) -> None:
    """Each layout / conv algorithm against torch: option-A channel padding, highway gates,
    pre-activated projections, grouped convs, an fc reading a spatial map (its rows reordered for
    NHWC), odd map sizes that leave Winograd tiles partly outside the image."""
    assert_lowering_matches_torch(spec, Lowering(layout, winograd))


def test_wide_winograd_computes_the_same_network() -> None:
    lowering = Lowering("NHWC", winograd=True, wide_winograd=True)
    assert_lowering_matches_torch(WIDE_ON_AN_ODD_MAP, lowering)


def assert_lowering_matches_torch(spec: str | tuple[str, dict[str, str]], lowering) -> None:
    """`spec`: a file, a spec's text, or a file with `let` overrides (a shallower preact_resnet164)."""
    import tvm
    if isinstance(spec, tuple):
        net = resdsl.load(spec[0], spec[1])
    else:
        net = resdsl.loads(spec) if "{" in spec else resdsl.load(spec)
    model = net.to_torch(seed=1).eval()
    randomize_bn(model, net.graph.shape("<input>"), seed=1)
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(2).standard_normal((2, *net.graph.shape("<input>")), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    executable = tvm_build.build(tvm_build.relax_module(net.graph, weights, 2, lowering), make_target("llvm"))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    assert rel_err(vm["main"](tvm.runtime.tensor(x)).numpy(), expected) < 1e-4


def test_cli_weights_file_onnx_and_llvm(tmp_path) -> None:
    net = resdsl.load("specs/cifar/highway20.rds")
    model = net.to_torch(seed=3).eval()
    randomize_bn(model, (3, 32, 32), seed=3)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    for target, suffix in (("onnx", ".onnx"), ("llvm", ".so")):
        subprocess.run([sys.executable, "-m", "resdsl", "compile", "specs/cifar/highway20.rds", "--target", target,
                        "--weights", str(tmp_path / "w.pt"), "--batch", "2", "-o", str(tmp_path / f"net{suffix}")],
                       cwd=ROOT, check=True, capture_output=True)
    onnx.checker.check_model(onnx.load(tmp_path / "net.onnx"), full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    assert rel_err(session.run(None, {"input": x})[0], expected) < 1e-4
    import tvm
    vm, _ = tvm_build.load_vm(tmp_path / "net.so")
    assert rel_err(vm["main"](tvm.runtime.tensor(x)).numpy(), expected) < 1e-4


@pytest.mark.parametrize("spec", ["specs/cifar/resnet20.rds", *map(str, TEST_SPECS)])
def test_cuda_build_without_gpu_gives_valid_cuda(spec, tmp_path) -> None:
    """Every op of the language (tests/specs/) builds for CUDA, and nvcc accepts the kernels."""
    net = resdsl.load(spec)
    weights = load_weights(net.graph, seed=0)
    executable = tvm_build.build(tvm_build.relax_module(net.graph, weights, 1), make_target("cuda"))
    sources = tvm_build.cuda_sources(executable)
    assert sources and all("__global__" in source for source in sources)
    for source in sources:
        assert len(tvm_build.nvcc_check(source, "sm_90")) > 1000
    tvm_build.export(executable, tmp_path / "net.so")
    assert (tmp_path / "net.so").stat().st_size > 0


def test_bn_folds_into_convs_and_residual_adds_fuse() -> None:
    from tvm import relax
    net = resdsl.load("specs/cifar/resnet20.rds")
    mod = tvm_build.relax_module(net.graph, load_weights(net.graph), 1)
    with make_target("llvm"):
        fused = relax.get_pipeline("zero")(mod)
    names = [gv.name_hint for gv in fused.get_global_vars()]
    # conv + folded-BN bias + residual add + relu: one kernel per block's second conv.
    assert any(n.startswith("fused_conv2d") and n.endswith("_add_add1_relu") for n in names), names
    assert not any("batch_norm" in n for n in names)


def test_winograd_convs_fuse_with_bias_add_and_relu() -> None:
    from tvm import relax
    net = resdsl.load("specs/cifar/resnet20.rds")
    mod = tvm_build.relax_module(net.graph, load_weights(net.graph), 1, Lowering("NHWC", True))
    with make_target("llvm"):
        fused = relax.get_pipeline("zero")(mod)
    names = [gv.name_hint for gv in fused.get_global_vars()]
    winograd = [n for n in names if n.startswith("fused_conv2d_winograd")]
    # Every 3x3 stride-1 conv of ResNet-20 is Winograd (the stride-2 ones are not), each fused
    # with its bias and ReLU, the second of each block with the residual add as well.
    assert winograd and all(n.endswith("relu") or n.endswith(("relu1", "relu2")) for n in winograd), names
    assert any(n.count("add") == 2 for n in winograd), names
    assert not any(n == "conv2d_winograd" or n.startswith("conv2d_winograd") for n in names), names


def test_winograd_only_where_its_weights_stay_small() -> None:
    import re

    from resdsl.tvm.winograd import tile_for
    net = resdsl.load("specs/resnet18.rds")
    mod = tvm_build.relax_module(net.graph, load_weights(net.graph), 1, Lowering("NHWC", True))
    script = mod["main"].script()
    # layer1's four 3x3 convs and layer2's three stride-1 ones (64 and 128 channels); layer3 and
    # layer4 (256, 512 channels: 9.4 and 37.7 MB of transformed weights each) stay direct, as do
    # the stem, the stride-2 convs and the projection shortcuts: 20 convs in all.
    assert len(re.findall(r"call_tir\(conv2d_winograd\w*,", script)) == 7
    assert script.count("R.nn.conv2d(") == 13
    # With --wide-winograd, layer3's three stride-1 convs too, as F(2x2, 3x3) (4.2 MB each);
    # layer4's would read 16.8 MB each.
    wide = Lowering("NHWC", winograd=True, wide_winograd=True)
    script = tvm_build.relax_module(net.graph, load_weights(net.graph), 1, wide)["main"].script()
    assert len(re.findall(r"call_tir\(conv2d_winograd\w*,", script)) == 10
    assert script.count("R.nn.conv2d(") == 10
    weights = load_weights(net.graph)
    tiles = [tile_for(net.graph.node(c).attrs, weights[f"{c}.weight"].shape, wide=True)
             for c in net.graph.nodes_of("conv")]
    assert (tiles.count(4), tiles.count(2), tiles.count(None)) == (7, 3, 10)


def test_bench_json_compares_engines_on_one_input(capsys) -> None:
    import json

    from resdsl.cli import main
    assert main(["bench", "specs/cifar/resnet20.rds", "--engines", "torch,onnxruntime,tvm,tvm-tuned",
                 "--budget", "0.2", "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["engine"]: r for r in report["results"]}
    assert report["threads"] == 1 and set(rows) == {"torch", "onnxruntime", "tvm", "tvm-tuned"}
    assert rows["onnxruntime"]["vs_onnxruntime"] == 1.0
    for engine in ("torch", "onnxruntime", "tvm"):
        assert rows[engine]["median_ms"] > 0 and rows[engine]["runs"] >= 3
        assert rows[engine]["rel_err"] < 1e-4
    assert rows["tvm-tuned"]["median_ms"] is None and "--tuned" in rows["tvm-tuned"]["note"]


def test_bench_compares_several_tuned_libraries(tmp_path, capsys) -> None:
    import json
    import shutil

    from resdsl.cli import main
    spec = "specs/cifar/resnet20.rds"
    assert main(["compile", spec, "--target", "llvm", "-o", str(tmp_path / "a.so")]) == 0
    (tmp_path / "x").mkdir()
    shutil.copy(tmp_path / "a.so", tmp_path / "b.so")
    shutil.copy(tmp_path / "a.so", tmp_path / "x" / "a.so")
    capsys.readouterr()
    libraries = [tmp_path / "a.so", tmp_path / "b.so", tmp_path / "x" / "a.so"]
    assert main(["bench", spec, "--engines", "onnxruntime,tvm-tuned", *(f"--tuned={p}" for p in libraries),
                 "--budget", "0.2", "--rounds", "4", "--threads", "1", "--json"]) == 0
    rows = {r["engine"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    # Rows are named by as much of each path as tells them apart.
    assert set(rows) == {"onnxruntime", "tvm-tuned:x/a.so", *(f"tvm-tuned:{tmp_path.name}/{n}" for n in ("a.so", "b.so"))}
    for row in rows.values():
        assert row["runs"] >= 4 and row["rel_err"] < 1e-4  # at least one run in every round


def test_a_library_built_without_a_batch_runs_any_batch(tmp_path) -> None:
    import tvm
    spec = "tests/specs/cifar_tiny.rds"
    net, weights, _, _ = reference(spec)
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, tmp_path / "w.pt")
    subprocess.run([sys.executable, "-m", "resdsl", "compile", spec, "--target", "llvm",
                    "--weights", str(tmp_path / "w.pt"), "-o", str(tmp_path / "net.so")],
                   cwd=ROOT, check=True, capture_output=True)
    vm, _ = tvm_build.load_vm(tmp_path / "net.so")
    model = net.to_torch().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        assert rel_err(vm["main"](tvm.runtime.tensor(x)).numpy(), expected) < 1e-4
    # Built for one batch (as a tuned library is), another batch is refused by name.
    subprocess.run([sys.executable, "-m", "resdsl", "compile", spec, "--target", "llvm",
                    "--batch", "2", "-o", str(tmp_path / "two.so")], cwd=ROOT, check=True, capture_output=True)
    vm, _ = tvm_build.load_vm(tmp_path / "two.so")
    with pytest.raises(Exception, match="this library was built for batch 2, not 3"):
        vm["main"](tvm.runtime.tensor(np.zeros((3, 3, 32, 32), np.float32)))
