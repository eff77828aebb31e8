"""Compile a graph with Apache TVM: targets, the build itself, and CUDA source checks.

`tvm` is imported lazily: it costs seconds, and only `compile --target llvm|cuda`, `tune` and
`bench` need it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..diagnostics import ResdslError
from ..ir import Graph

DEFAULT_ARCH = "sm_90"


def make_target(kind: str, cpu: str | None = None, arch: str = DEFAULT_ARCH, cores: int | None = None):
    # TVM's CPU thread pool (started lazily, also in tuning workers, which inherit the
    # environment) uses half the hardware threads unless told; match the target's num-cores.
    os.environ.setdefault("TVM_NUM_THREADS", str(cores or os.cpu_count() or 1))
    from tvm.target import Target
    if kind == "llvm":
        from tvm.target import codegen
        cpu = cpu or codegen.llvm_get_system_cpu()
        if not codegen.llvm_is_valid_cpu(cpu, codegen.llvm_get_system_triple()):
            raise ResdslError(f"LLVM does not know the CPU `{cpu}`", hint="try --cpu x86-64-v3 or omit --cpu")
        return Target({"kind": "llvm", "mcpu": cpu, "num-cores": cores or os.cpu_count() or 1})
    if kind == "cuda":
        if not arch.startswith("sm_"):
            raise ResdslError(f"`{arch}` is not a CUDA architecture", hint="use a name like sm_90 or sm_80")
        return Target({"kind": "cuda", "arch": arch, "max_threads_per_block": 1024,
                       "max_shared_memory_per_block": 49152, "thread_warp_size": 32},
                      host={"kind": "llvm"})
    raise ResdslError(f"unknown TVM target `{kind}`", hint="use llvm or cuda")


def relax_module(graph: Graph, weights: dict[str, np.ndarray], batch: int):
    from .tvm_relax import to_relax
    return to_relax(graph, weights, batch)


def build(mod, target, work_dir: str | Path | None = None):
    """Compile the IRModule; with a tuning work_dir, apply its database (MetaSchedule records)."""
    import tvm
    from tvm import relax
    if work_dir is not None and _has_records(work_dir):
        from tvm.s_tir import meta_schedule as ms
        database = ms.database.JSONDatabase(work_dir=str(work_dir), allow_missing=True)
        with target, database:
            mod = relax.get_pipeline("zero")(mod)  # legalize, fuse, apply the tuned schedules
    elif target.kind.name == "llvm":
        with target:  # the default CPU pipeline does not fuse; `zero` does
            mod = relax.get_pipeline("zero")(mod)
    if target.kind.name == "cuda":
        mod = _gpu_default_schedules(mod, target)
    return tvm.compile(mod, target=target)


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


def _has_records(work_dir: str | Path) -> bool:
    path = Path(work_dir) / "database_tuning_record.json"
    return path.exists() and path.stat().st_size > 0


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
