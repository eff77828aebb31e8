"""How MetaSchedule builds and times a candidate schedule while tuning: the builder, the runner
(here, or on an RPC tracker's devices), how a candidate is timed, and the tensor intrinsics a
target's schedule rules may name, registered before any TuneContext is made.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..diagnostics import OptionError


@dataclass
class RPC:
    """A TVM RPC tracker whose devices measure the candidates."""
    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, tracker: str, key: str | None) -> RPC:
        host, _, port = tracker.rpartition(":")
        if not host or not port.isdigit():
            raise OptionError(f"the RPC tracker `{tracker}` is not HOST:PORT", ("rpc_tracker",),
                              hint="e.g. 127.0.0.1:9190")
        if not key:
            raise OptionError("an RPC tracker needs the device key its servers registered", ("rpc_key",))
        return cls(host, int(port), key)


def _synchronous(runner):
    """Wrap a runner so `run` returns only once every candidate is measured.

    MetaSchedule otherwise builds the next task's candidates while this batch is being timed;
    on a 2-core machine the compiler then steals the cores the measurement runs on, and every
    latency the search learns from is inflated and noisy. (RPC runs measure elsewhere.)
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner

    @derived_object
    class SynchronousRunner(PyRunner):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def run(self, runner_inputs):
            futures = self.inner.run(runner_inputs)
            for future in futures:
                future.result()
            return futures

    return SynchronousRunner(runner)


def evaluator(cache: str):
    """How a candidate is timed: cold (caches flushed before each single run) or MetaSchedule's default."""
    from tvm.s_tir import meta_schedule as ms
    if cache == "cold":
        return ms.runner.EvaluatorConfig(number=1, repeat=5, min_repeat_ms=0, enable_cpu_cache_flush=True)
    return None


def make_runner(target, rpc: RPC | None, cache: str = "hot"):
    from tvm.s_tir import meta_schedule as ms
    timing = evaluator(cache)
    if rpc is not None:
        config = ms.runner.RPCConfig(tracker_host=rpc.host, tracker_port=rpc.port, tracker_key=rpc.key,
                                     session_timeout_sec=60)
        # Synchronous too: the scheduler commits a batch before it picks the next task.
        return _synchronous(ms.runner.RPCRunner(rpc_config=config, evaluator_config=timing))
    if target.kind.name == "cuda":
        import tvm
        if not tvm.cuda().exist:
            raise OptionError(
                "no CUDA GPU on this machine to measure tuning candidates on",
                ("rpc_tracker", "rpc_key"),
                hint="tune on a machine with a GPU, or measure on remote GPUs through an RPC tracker",
            )
    return _synchronous(ms.runner.LocalRunner(evaluator_config=timing))


def build_without_intrinsics(mod, target, _params):
    """MetaSchedule's default build, minus `import tvm.s_tir.tensor_intrin`.

    That import registers every tensor intrinsic and its CUDA half alone takes ~40 s on these
    2-core machines: longer than the builder's per-candidate timeout, so every candidate failed.
    resdsl builds fp32 networks, whose schedules (CPU or CUDA) use no tensor intrinsics.
    """
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    return build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def register_intrinsics(target) -> None:
    """Register the tensor intrinsics `target`'s schedule rules may name, and no others.

    Every TuneContext runs `import tvm.s_tir.tensor_intrin`, which parses the TVMScript of every
    intrinsic TVM has (CUDA, ROCm, Hexagon, Arm, x86, RISC-V): ~95 s of each `resdsl tune`'s
    start-up on a 2-core EPYC, 70 s of it CUDA's. The package is entered as already imported,
    with only the submodules of this target's kind: CPU rules name x86's VNNI/AVX-512 dot
    products (or Arm's, RISC-V's) on CPUs that have them; CUDA's name CUDA's.
    """
    import importlib
    import importlib.util
    import sys
    package = "tvm.s_tir.tensor_intrin"
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        return  # another TVM layout: let TuneContext import it all
    sys.modules[package] = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
    families = ("cuda",) if target.kind.name == "cuda" else ("x86", "arm_cpu", "riscv_cpu")
    for family in families:
        importlib.import_module(f"{package}.{family}")


def make_builder(target):
    from tvm.s_tir import meta_schedule as ms
    return ms.builder.LocalBuilder(f_build=build_without_intrinsics,
                                   timeout_sec=60 if target.kind.name == "llvm" else 120)
