"""TVM targets, and the machine a tuning record's times belong to."""
from __future__ import annotations

import os

from ..diagnostics import OptionError

DEFAULT_ARCH = "sm_90"


def make_target(kind: str, cpu: str | None = None, arch: str = DEFAULT_ARCH, cores: int | None = None):
    # TVM's CPU thread pool (started lazily, also in tuning workers, which inherit the
    # environment) uses half the hardware threads unless told; match the target's num-cores.
    os.environ.setdefault("TVM_NUM_THREADS", str(cores or os.cpu_count() or 1))
    from tvm.target import Target
    if kind == "llvm":
        from tvm.target import codegen
        cpu = cpu or host_cpu()
        if not codegen.llvm_is_valid_cpu(cpu, codegen.llvm_get_system_triple()):
            raise OptionError(f"LLVM does not know the CPU `{cpu}`", ("cpu",),
                              hint="try x86-64-v3, or leave the CPU unset for this host's")
        return Target({"kind": "llvm", "mcpu": cpu, "num-cores": cores or os.cpu_count() or 1})
    if kind == "cuda":
        if not arch.startswith("sm_"):
            raise OptionError(
                f"`{arch}` is not a CUDA architecture", ("arch",), hint="use a name like sm_90 or sm_80"
            )
        return Target({"kind": "cuda", "arch": arch, "max_threads_per_block": 1024,
                       "max_shared_memory_per_block": 49152, "thread_warp_size": 32},
                      host={"kind": "llvm"})
    raise OptionError(f"unknown TVM target `{kind}`", ("target",), hint="use llvm or cuda")


def host_cpu() -> str:
    """LLVM's name for this machine's CPU, the default CPU of a build."""
    from tvm.target import codegen
    return str(codegen.llvm_get_system_cpu())


def machine(target) -> tuple[str, str, int]:
    """What a record's times depend on besides its schedule: the target kind, its CPU (or GPU
    architecture) and its thread count. Records with another machine's times rank schedules for
    that machine: an AVX2 CPU's best vectorises 8 floats wide where an AVX-512 one wants 16."""
    attrs = target.attrs
    return (
        target.kind.name,
        str(attrs.get("mcpu") or attrs.get("arch") or ""),
        int(attrs.get("num-cores") or 0),
    )


def describe_machine(target) -> str:
    """`machine(target)` in words, for notes: "rocketlake with 2 threads"."""
    kind, chip, threads = machine(target)
    return f"{chip or kind} with {threads} thread{'s' * (threads != 1)}" if threads else chip or kind
