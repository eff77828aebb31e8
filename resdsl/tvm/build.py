"""Compile a graph with Apache TVM: Relax, fused kernels, tuned schedules, the shared library.

`tvm` is imported lazily: it costs seconds, and only the TVM targets, `tune` and `bench` need it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..ir import Graph
from .lowering import Lowering
from .target import DEFAULT_ARCH, make_target
from .workdir import WorkDir


def relax_module(graph: Graph, weights: dict[str, np.ndarray], batch: int | None = None,
                 lowering: Lowering = Lowering()):
    """The Relax module of `graph`; `batch` None leaves the batch dimension symbolic."""
    from .relax_frontend import to_relax
    return to_relax(graph, weights, batch, layout=lowering.layout, winograd=lowering.winograd,
                    wide_winograd=lowering.wide_winograd, precision=lowering.precision)


def kernels(mod, target, lowering: Lowering = Lowering()):
    """Legalize and fuse the Relax graph into TIR kernels: the tasks tuning measures, and what
    `build` applies their records to. Call it outside any MetaSchedule database context (the
    `zero` pipeline would apply that database's records itself)."""
    from tvm import relax
    if lowering.precision == "bf16":
        from . import bf16
        bf16.require(target)
    with target:
        mod = relax.get_pipeline("zero")(mod)
        if lowering.prepack:
            # Weights are constants, so every conv/matmul weight buffer is marked layout-free:
            # MetaSchedule's RewriteLayout may then store it in the order its tiles read it.
            mod = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
            if lowering.precision == "bf16":
                mod = bf16.keep_packed(mod)
    return mod


def build(mod, target, work_dir: WorkDir | None = None, lowering: Lowering = Lowering()):
    """Compile the IRModule; with a tuning work directory, apply its records."""
    from tvm import relax
    # On the CPU, `main` is compiled to machine code rather than VM bytecode: ResNet-50 makes ~70
    # kernel calls a run, and the compiled one measured faster (benchmarks/RESULTS.md). CUDA
    # keeps bytecode: the compiled one has not been run on a GPU.
    mode = "compiled" if target.kind.name == "llvm" else "bytecode"
    return relax.build(schedule(mod, target, work_dir, lowering), target=target, exec_mode=mode)


def schedule(mod, target, work_dir: WorkDir | None = None, lowering: Lowering = Lowering()):
    """The IRModule `build` compiles: fused kernels, with the tuned schedules where there are."""
    import tvm
    from tvm import relax
    if work_dir is not None and work_dir.has_records():
        database = work_dir.build_database()  # checked and read before any work on the module
        mod = kernels(mod, target, lowering)
        with target, database:
            mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        if lowering.prepack:
            # Each tuned kernel now starts with a block that repacks its weight; split those
            # blocks into their own functions and, the weights being constants, run them once
            # here: the library stores packed weights and its interface stays `main(input)`.
            with target:
                mod = tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                                relax.transform.FoldConstant(),
                                                relax.transform.DeadCodeElimination()])(mod)
    elif target.kind.name == "llvm":
        mod = kernels(mod, target, lowering)  # the default CPU pipeline does not fuse; `zero` does
    if target.kind.name == "cuda":
        mod = _gpu_default_schedules(mod, target)
    return mod


def _gpu_default_schedules(mod, target):
    """dlight thread bindings for every kernel the tuner did not schedule."""
    from tvm import relax
    from tvm.s_tir import dlight as dl
    with target:
        mod = relax.get_pipeline("zero")(mod) if not _is_fused(mod) else mod
        return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                       dl.gpu.GeneralReduction(), dl.gpu.Fallback())(mod)


def _is_fused(mod) -> bool:
    from tvm import tirx
    return any(isinstance(f, tirx.PrimFunc) for f in mod.functions.values())


def export(executable, path: str | Path) -> None:
    """Write the shared library atomically (export_library writes in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.so")
    try:
        executable.export_library(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cuda_sources(executable) -> list[str]:
    """The CUDA C source of every CUDA module inside a built executable."""
    def walk(module):
        yield module
        for child in module.imports:
            yield from walk(child)
    return [m.inspect_source() for m in walk(executable.mod) if m.kind == "cuda"]


def nvcc_check(source: str, arch: str = DEFAULT_ARCH) -> bytes:
    """Compile CUDA source with nvcc into a fatbin: proof the kernels are valid CUDA."""
    from tvm.support import nvcc
    with make_target("cuda", arch=arch):  # nvcc reads the compute version from the current target
        return bytes(nvcc.compile_cuda(source, "fatbin", arch=arch, compiler="nvcc"))


def load_vm(path: str | Path, device: str = "cpu"):
    import tvm
    from tvm import relax
    dev = tvm.cuda() if device == "cuda" else tvm.cpu()
    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), dev), dev
