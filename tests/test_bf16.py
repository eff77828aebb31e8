"""bf16 convs on CPUs with AVX512-BF16 (`resdsl.tvm.bf16`): the packing, the tensor intrinsic
against numpy, whole networks against fp32, and what a CPU without the instructions is told."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from resdsl.backends.weights import load_weights
from resdsl.diagnostics import OptionError
from resdsl.network import load
from resdsl.tvm import bf16
from resdsl.tvm.lowering import Lowering
from resdsl.tvm.target import make_target
from resdsl.tvm.workdir import WorkDir
from test_bench_engines import _threads_restored  # noqa: F401 - bench's thread counts undone after each test
from test_outputs import builds  # noqa: F401 - a fixture
from test_tuning import measured, tuned_dir

pytestmark = pytest.mark.tvm

BF16 = Lowering("NHWC", winograd=True, prepack=True, precision="bf16")


def host_has_bf16() -> bool:
    return bf16.supported(make_target("llvm"))


needs_bf16 = pytest.mark.skipif(not host_has_bf16(), reason="this CPU has no AVX512-BF16")


def rounded(a: np.ndarray) -> np.ndarray:
    """`a` rounded to bf16 (nearest even) and widened back: what the kernels multiply."""
    import ml_dtypes
    return a.astype(ml_dtypes.bfloat16).astype(np.float32)


def test_weights_pack_into_16_output_by_2_input_channel_rows() -> None:
    w = np.random.default_rng(0).standard_normal((32, 6, 3, 3)).astype(np.float32)
    packed = bf16.pack_weight(w)
    assert packed.shape == (2, 3, 3, 3, 16, 2) and str(packed.dtype) == "bfloat16"
    o, i, y, x = 21, 5, 2, 0
    assert float(packed[o // 16, y, x, i // 2, o % 16, i % 2]) == rounded(w)[o, i, y, x]
    # One intrinsic call reads one contiguous row: 16 output channels, each an input channel pair.
    row = packed[1, y, x, i // 2].astype(np.float32)
    np.testing.assert_array_equal(row, rounded(w)[16:32, 4:6, y, x])
    assert bf16.packs((64, 64, 3, 3), 1) and not bf16.packs((64, 3, 7, 7), 1)
    stem = np.ones((64, 3, 7, 7), np.float32)
    assert bf16.paired(stem).shape == (64, 4, 7, 7)
    assert not bf16.paired(stem)[:, 3].any()  # a zero 4th channel
    assert not bf16.packs((60, 64, 1, 1), 1) and not bf16.packs((64, 64, 3, 3), 32)


def test_bf16_is_a_lowering_of_cpu_nhwc_builds() -> None:
    assert Lowering.resolve("llvm", precision="bf16") == BF16
    assert Lowering.resolve("llvm").precision == "fp32"
    assert "bf16" in BF16.describe() and BF16.options("llvm") == {"precision": "bf16"}
    assert Lowering.from_json(BF16.to_json()) == BF16
    assert Lowering.from_dict({"layout": "NHWC"}).precision == "fp32"  # a directory from before bf16
    with pytest.raises(ValueError, match="precision"):
        Lowering.from_dict({"precision": "fp16"})
    for kind, layout in (("cuda", None), ("llvm", "nchw")):
        with pytest.raises(OptionError, match="bf16"):
            Lowering.resolve(kind, layout=layout, winograd=False, precision="bf16")


def test_a_cpu_without_avx512_bf16_is_told_to_build_fp32(capsys) -> None:
    from resdsl.cli import main
    assert main(["compile", "tests/specs/cifar_tiny.rds", "--target", "llvm", "--cpu", "znver3", "--untuned",
                 "--precision", "bf16", "-o", "/tmp/resdsl-never-written.so"]) == 1
    err = capsys.readouterr().err
    assert "znver3" in err and "AVX512-BF16" in err and "fp32" in err and "Traceback" not in err


def test_a_bf16_database_is_chosen_only_for_bf16_builds(tmp_path, monkeypatch) -> None:
    from resdsl.tvm.databases import choose
    monkeypatch.setenv("RESDSL_DATABASES", str(tmp_path))
    plain = WorkDir(tuned_dir(tmp_path, "net-llvm-znver5", "znver5", measured(8.0, 0.80)))
    low = WorkDir(tuned_dir(tmp_path, "bf16-net-llvm-znver5", "znver5", measured(5.0, 0.50)))
    low.save_lowering(BF16)
    assert choose("net", "znver5") == plain  # the faster one rounds its inputs: never unasked
    assert choose("net", "znver5", precision="bf16") == low
    assert choose("net", "znver4", precision="bf16") == low


@needs_bf16
def test_the_dot_product_intrinsic_computes_a_conv_in_fp32_sums() -> None:
    """A padded 3x3 conv scheduled by hand around `DOT_16x2`: vdpbf16ps in the machine code, and
    the products of the bf16-rounded operands summed as numpy sums them in fp32."""
    import ml_dtypes
    import tvm
    from tvm import s_tir, te
    bf16.register()
    rng = np.random.default_rng(1)
    h, ci, co = 5, 8, 32
    data = te.placeholder((1, h, h, ci), "bfloat16", name="data")
    packed = te.placeholder((co // 16, 3, 3, ci // 2, 16, 2), "bfloat16", name="w")
    out = bf16.conv2d_nhwc(data, packed, (1, 1), (1, 1, 1, 1), (1, 1))
    sch = s_tir.Schedule(te.create_prim_func([data, packed, out]))
    block = sch.get_sblock("conv2d_bf16")
    b, y, x, o, ry, rx, rc = sch.get_loops(block)
    o_outer, o_inner = sch.split(o, [None, 16])
    rc_outer, rc_inner = sch.split(rc, [None, 2])
    sch.reorder(b, y, x, o_outer, ry, rx, rc_outer, o_inner, rc_inner)
    sch.decompose_reduction(block, ry)
    sch.tensorize(o_inner, bf16.DOT_16x2)
    library = tvm.compile(sch.mod, target=make_target("llvm"))
    assert "vdpbf16ps" in library.mod.inspect_source("asm")
    x_ = rng.standard_normal((1, h, h, ci)).astype(np.float32)
    w = rng.standard_normal((co, ci, 3, 3)).astype(np.float32)
    got = tvm.runtime.empty((1, h, h, co), "float32", tvm.cpu())
    library(tvm.runtime.tensor(x_.astype(ml_dtypes.bfloat16)), tvm.runtime.tensor(bf16.pack_weight(w)), got)
    padded = np.pad(rounded(x_), ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = sum(np.einsum("nhwc,oc->nhwo", padded[:, dy:dy + h, dx:dx + h], rounded(w)[:, :, dy, dx])
                   for dy in range(3) for dx in range(3))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_every_candidate_the_search_draws_for_a_bf16_conv_builds() -> None:
    """Random schedules of a bf16 conv from resdsl's design space (its postprocessors applied, as
    the search applies them) all compile for a CPU with AVX512-BF16. Without the refusal of a
    vectorized loop around the intrinsic, about 40% of them fail to ("Cannot broadcast")."""
    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms
    bf16.register()
    data = te.placeholder((1, 8, 8, 32), "bfloat16", name="data")
    packed = te.placeholder((4, 3, 3, 16, 16, 2), "bfloat16", name="w")
    out = bf16.conv2d_nhwc(data, packed, (1, 1), (1, 1, 1, 1), (1, 1))
    target = make_target("llvm", cpu="znver5")
    context = ms.TuneContext(mod=tvm.IRModule({"main": te.create_prim_func([data, packed, out])}),
                             target=target, space_generator=bf16.space(),
                             search_strategy=ms.search_strategy.ReplayTrace(), task_name="conv",
                             num_threads=1, rand_state=0)
    context.pre_tuning(max_trials=16, num_trials_per_iter=16, design_spaces=context.generate_design_space())
    candidates = context.search_strategy.generate_measure_candidates()
    assert len(candidates) == 16
    for candidate in candidates:
        assert "vdpbf16ps" in tvm.compile(candidate.sch.mod, target=target).mod.inspect_source("asm")


@needs_bf16
def test_a_bf16_network_agrees_with_fp32() -> None:
    """ResNet-18's convs in bf16 (the RGB stem with a zero 4th channel), untuned: the logits within
    1% of the fp32 build's largest, and the same class."""
    import tvm
    from tvm import relax

    from resdsl.tvm.build import build, relax_module
    net = load("specs/resnet18.rds")
    weights = load_weights(net.graph, None, 0)
    direct = Lowering("NHWC", winograd=False, prepack=True, precision="bf16")
    calls = re.findall(r"call_tir\(cls\.conv2d_\w+", relax_module(net.graph, weights, 1, direct).script())
    assert len(calls) == 20 and all("bf16" in c for c in calls)  # the stem, 16 3x3s, 3 shortcut 1x1s
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    logits = {}
    for lowering in (Lowering.default("llvm"), direct):
        executable = build(relax_module(net.graph, weights, 1, lowering), make_target("llvm"))
        vm = relax.VirtualMachine(executable, tvm.cpu())
        logits[lowering.precision] = vm["main"](tvm.runtime.tensor(x)).numpy()
    fp32, low = logits["fp32"], logits["bf16"]
    err = np.abs(low - fp32).max() / np.abs(fp32).max()
    assert 1e-5 < err < 1e-2  # rounded, so not equal; not far
    assert fp32.argmax() == low.argmax()


@needs_bf16
def test_bench_runs_openvino_at_its_bf16_precision() -> None:
    # In a process of its own: a bf16 OpenVINO model left in the test process made a later fork
    # (a DataLoader's workers, in another test) crash the whole run.
    import subprocess
    import sys

    from conftest import ROOT
    result = subprocess.run([sys.executable, "-m", "resdsl", "bench", "specs/cifar/resnet20.rds", "--engines",
                             "openvino,openvino-bf16", "--budget", "0.2", "--threads", "1", "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = {r["engine"]: r for r in json.loads(result.stdout)["results"]}
    assert rows["openvino"]["rel_err"] < 1e-4
    assert 1e-5 < rows["openvino-bf16"]["rel_err"] < 5e-2  # really bf16: not f32 under another name


def test_compile_in_bf16_applies_the_bf16_database(tmp_path, capsys, builds) -> None:
    from resdsl.cli import main
    assert main(["compile", "resnet18", "--target", "llvm", "--cpu", "znver5", "--precision", "bf16",
                 "-o", str(tmp_path / "r.so")]) == 0
    [(work_dir, lowering, _)] = builds
    assert work_dir.name == "bf16-resnet18-llvm-znver5" and lowering.precision == "bf16"
    assert "applying the shipped database bf16-resnet18-llvm-znver5" in capsys.readouterr().err
    builds.clear()
    assert main(["compile", "resnet18", "--target", "llvm", "--cpu", "znver5",
                 "-o", str(tmp_path / "r.so")]) == 0
    assert builds[0][0].name != "bf16-resnet18-llvm-znver5" and builds[0][1].precision == "fp32"


def test_openvino_bf16_is_skipped_where_the_cpu_has_no_bf16(monkeypatch) -> None:
    """OpenVINO would quietly run f32 under the bf16 hint there: the row says why it is empty."""
    import importlib.machinery
    import sys
    import types

    from resdsl.bench import run_bench

    class Core:
        def get_property(self, device: str, name: str) -> list[str]:
            assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
            return ["FP32", "INT8"]

    fake = types.ModuleType("openvino")
    fake.__spec__ = importlib.machinery.ModuleSpec("openvino", None)  # installed, as far as anyone asks
    fake.Core = Core
    monkeypatch.setitem(sys.modules, "openvino", fake)
    net = load("tests/specs/cifar_tiny.rds")
    [row] = run_bench(net, load_weights(net.graph, None, 0), 1, 1, ("openvino-bf16",), (), None, 0.01, 1)
    assert row.median_ms is None
    assert row.note == "skipped: this CPU has no bf16 instructions (AVX512-BF16 or AMX)"


def test_a_shipped_bf16_database_reads_on_a_machine_that_never_read_it() -> None:
    """TVM applies each record's trace as it reads it, and a bf16 kernel's trace names our
    intrinsic: with no cached verdicts, in a fresh process, the check and the database both need
    it registered first, or every bf16 record reads as damaged."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    script = """
from resdsl.tvm import databases
names = sorted(p.name for p in databases.root().glob("bf16-*"))
assert names, "no bf16 database ships"
for name in names:
    databases.shipped(name).database()
print(len(names))
"""
    env = {**os.environ, "RESDSL_CACHE_DIR": ""}  # empty: no verdicts kept from earlier reads
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 4
