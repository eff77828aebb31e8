"""Compile a graph with Apache TVM: targets, the build itself, and CUDA source checks.

`tvm` is imported lazily: it costs seconds, and only `compile --target llvm|cuda`, `tune` and
`bench` need it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..diagnostics import ResdslError
from ..ir import Graph
from ..measurement import RECORDS, has_records, machine

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
            raise ResdslError(f"LLVM does not know the CPU `{cpu}`", hint="try --cpu x86-64-v3 or omit --cpu")
        return Target({"kind": "llvm", "mcpu": cpu, "num-cores": cores or os.cpu_count() or 1})
    if kind == "cuda":
        if not arch.startswith("sm_"):
            raise ResdslError(f"`{arch}` is not a CUDA architecture", hint="use a name like sm_90 or sm_80")
        return Target({"kind": "cuda", "arch": arch, "max_threads_per_block": 1024,
                       "max_shared_memory_per_block": 49152, "thread_warp_size": 32},
                      host={"kind": "llvm"})
    raise ResdslError(f"unknown TVM target `{kind}`", hint="use llvm or cuda")


def host_cpu() -> str:
    """LLVM's name for this machine's CPU, the default `--cpu`."""
    from tvm.target import codegen
    return str(codegen.llvm_get_system_cpu())


def tuned_for(work_dir: str | Path):
    """The target a work directory's records were measured for (their first record's), or None."""
    from tvm.target import Target
    path = Path(work_dir) / RECORDS
    try:
        with open(path, "rb") as f:
            line = f.readline()
        return Target(json.loads(line)[1][2]) if line.strip() else None
    except (OSError, ValueError, IndexError, TypeError, AttributeError):  # TVM raises ValueError for a bad target
        return None  # not a readable database: building from it says what is wrong


def describe_machine(target) -> str:
    """`machine(target)` in words, for notes: "rocketlake with 2 threads"."""
    kind, chip, threads = machine(target)
    return f"{chip or kind} with {threads} thread{'s' * (threads != 1)}" if threads else chip or kind


LOWERING_FILE = "lowering.json"
# One record per kernel, re-timed and chosen among the search's best (see resdsl.selection).
SELECTED = "selected"


@dataclass(frozen=True)
class Lowering:
    """How the graph becomes Relax. Tuning records only apply to kernels lowered the same way,
    so a tuning work directory remembers its lowering and every later build reuses it."""
    layout: str = "NCHW"
    winograd: bool = False
    # Weights stored in the order each tuned kernel reads them (MetaSchedule's RewriteLayout).
    prepack: bool = False
    # With `winograd`, also the 3x3 convs of up to 256x256 channels, as F(2x2, 3x3).
    wide_winograd: bool = False

    @classmethod
    def default(cls, target_kind: str) -> "Lowering":
        # Tuned CPU convs vectorise over channels: measured here, 64 trials on ResNet-18's layer1
        # and layer4 3x3 convs gave 1.56 / 2.78 ms in NHWC against 4.54 / 3.50 ms in NCHW (the
        # latter after 251 trials). Prepacked weights: in one interleaved bench, ResNet-18 ran in
        # 35.5 ms (2110 trials) against 41.8 ms unpacked (2932), ResNet-50 in 85.6 ms against
        # 117.4. Winograd, on every 3x3 conv and at 32 trials, was slower (2.15 / 6.80 ms on the
        # convs above); only where its weights stay small (64-128 channels: layer1, layer2) and
        # with 128-190 trials each it won: ResNet-18 in 34.8 ms against 41.2 ms direct, in one
        # bench, both built from the search's records as recorded.
        # On CUDA the untuned dlight schedules are written for NCHW.
        return cls("NHWC", winograd=True, prepack=True) if target_kind == "llvm" else cls()

    @classmethod
    def resolve(cls, target_kind: str, layout: str | None, winograd: bool | None,
                work_dir: Path | None = None, prepack: bool | None = None,
                wide_winograd: bool | None = None, seeds: tuple[Path, ...] = ()) -> "Lowering":
        """Options given on the command line, else the work directory's, else that of the first
        directory it is seeded from (`tune --reuse-records`), else the target's default."""
        saved = cls.saved(work_dir) if work_dir is not None else None
        base = saved or cls.seeded(target_kind, seeds) or cls.default(target_kind)
        layout = layout.upper() if layout else base.layout
        if winograd is None:
            winograd = base.winograd and layout == "NHWC"
        if prepack is None:
            prepack = base.prepack and target_kind == "llvm"
        if wide_winograd is None:
            wide_winograd = base.wide_winograd and winograd
        lowering = cls(layout, winograd, prepack, wide_winograd)
        if lowering.winograd and lowering.layout != "NHWC":
            raise ResdslError("--winograd needs --layout nhwc", hint="add --layout nhwc, or drop --winograd")
        if lowering.wide_winograd and not lowering.winograd:
            raise ResdslError("--wide-winograd extends --winograd", hint="add --winograd, or drop --wide-winograd")
        for flag, on in (("--winograd", lowering.winograd), ("--prepack", lowering.prepack)):
            if on and target_kind != "llvm":
                raise ResdslError(f"{flag} is for --target llvm only", hint=f"drop {flag} for this target")
        if saved is not None and saved != lowering:
            raise ResdslError(f"{work_dir} was tuned with {saved.describe()}, not {lowering.describe()}",
                              hint="drop --layout/--winograd/--wide-winograd/--prepack to use the work "
                                   "directory's, or tune into a new one")
        return lowering

    @classmethod
    def seeded(cls, target_kind: str, seeds: tuple[Path, ...]) -> "Lowering | None":
        """The lowering of the first seed that has one: its records only apply to kernels lowered
        the same way, so a directory seeded from a Winograd one and lowered without it would
        tune those kernels from nothing. None where it does not suit this target."""
        lowering = next((s for s in map(cls.saved, seeds) if s is not None), None)
        if lowering is not None and target_kind != "llvm" and (lowering.winograd or lowering.prepack):
            return None  # a CPU directory seeding a CUDA one: only its NCHW direct kernels could match
        return lowering

    @classmethod
    def saved(cls, work_dir: Path) -> "Lowering | None":
        path = Path(work_dir) / LOWERING_FILE
        if not path.exists() and Path(work_dir).name == SELECTED:
            path = Path(work_dir).parent / LOWERING_FILE  # a selection is lowered as its search was
        if path.exists():
            return cls(**json.loads(path.read_text()))
        # Work directories from before resdsl recorded the lowering hold NCHW direct convs.
        return cls() if has_records(work_dir) else None

    def save(self, work_dir: Path) -> None:
        from ..output import write_atomic
        write_atomic(Path(work_dir) / LOWERING_FILE, json.dumps(asdict(self)) + "\n")

    def flags(self, target_kind: str = "llvm") -> list[str]:
        """The `tune`/`compile` options that give this lowering where the target's default differs."""
        default = self.default(target_kind)
        return ([f"--layout {self.layout.lower()}"] * (self.layout != default.layout)
                + ["--no-winograd" if default.winograd else "--winograd"] * (self.winograd != default.winograd)
                + ["--wide-winograd"] * self.wide_winograd
                + ["--no-prepack" if default.prepack else "--prepack"] * (self.prepack != default.prepack))

    def describe(self) -> str:
        winograd = " with Winograd 3x3 convs" + (" up to 256 channels" if self.wide_winograd else " up to 128 channels")
        return (f"layout {self.layout}" + (winograd if self.winograd else "")
                + (" and prepacked weights" if self.prepack else ""))


def relax_module(graph: Graph, weights: dict[str, np.ndarray], batch: int, lowering: Lowering = Lowering()):
    from .tvm_relax import to_relax
    return to_relax(graph, weights, batch, layout=lowering.layout, winograd=lowering.winograd,
                    wide_winograd=lowering.wide_winograd)


def kernels(mod, target, lowering: Lowering = Lowering()):
    """Legalize and fuse the Relax graph into TIR kernels: the tasks tuning measures, and what
    `build` applies their records to. Call it outside any MetaSchedule database context (the
    `zero` pipeline would apply that database's records itself)."""
    from tvm import relax
    with target:
        mod = relax.get_pipeline("zero")(mod)
        if lowering.prepack:
            # Weights are constants, so every conv/matmul weight buffer is marked layout-free:
            # MetaSchedule's RewriteLayout may then store it in the order its tiles read it.
            mod = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    return mod


def build(mod, target, work_dir: str | Path | None = None, lowering: Lowering = Lowering()):
    """Compile the IRModule; with a tuning work_dir, apply its database (MetaSchedule records)."""
    from tvm import relax
    # On the CPU, `main` compiled to machine code rather than VM bytecode: ResNet-50 makes ~70
    # kernel calls a run, and in two interleaved benches here the compiled one ran 0.8% and
    # 1.3% faster (30.84 against 31.09 ms, 29.55 against 29.97). CUDA keeps bytecode: the
    # compiled one has not been run on a GPU.
    mode = "compiled" if target.kind.name == "llvm" else "bytecode"
    return relax.build(schedule(mod, target, work_dir, lowering), target=target, exec_mode=mode)


def schedule(mod, target, work_dir: str | Path | None = None, lowering: Lowering = Lowering()):
    """The IRModule `build` compiles: fused kernels, with the tuned schedules where there are."""
    import tvm
    from tvm import relax
    if work_dir is not None and has_records(work_dir):
        from tvm.s_tir import meta_schedule as ms
        mod = kernels(mod, target, lowering)
        database = ms.database.JSONDatabase(work_dir=str(_database_dir(work_dir)), allow_missing=True)
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


def _database_dir(work_dir: str | Path) -> Path:
    """The selected records where `tune` chose them, else the whole search's best."""
    selected = Path(work_dir) / SELECTED
    return selected if has_records(selected) else Path(work_dir)


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
