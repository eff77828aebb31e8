"""`bench`'s TVM rows: the untuned build and one row per tuned database or library; and a tuned
library timed against ONNX Runtime, which `tune` reports."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bench import run_bench
from .workdir import WorkDir


def tvm_engines(net, weights: dict, x: np.ndarray, threads: int, tuned: tuple[WorkDir | Path, ...],
                cpu: str | None) -> dict:
    """`tvm` and `tvm-tuned` (one `tvm-tuned:NAME` row each where several are given); each
    value prepares its engine and returns a function that runs one inference. `bench` finds
    this function through the llvm target's entry in `resdsl.targets`."""
    def make_engine(source: WorkDir | Path | None):
        def make():
            import tvm
            from .build import build, load_vm, relax_module
            from .lowering import Lowering
            from .target import make_target
            if isinstance(source, Path):  # a built library
                vm, dev = load_vm(source)
            else:
                target = make_target("llvm", cpu=cpu, cores=threads)
                # The tuned row uses the lowering its records were tuned for; untuned, the default.
                lowering = Lowering.resolve("llvm", work_dir=source)
                executable = build(
                    relax_module(net.graph, weights, x.shape[0], lowering), target, source, lowering
                )
                vm, dev = tvm.relax.VirtualMachine(executable, tvm.cpu()), tvm.cpu()
            tx = tvm.runtime.tensor(x, dev)
            return lambda: vm["main"](tx).numpy()
        return make

    makers = {"tvm": make_engine(None)}
    for source, name in zip(tuned, _short_names(tuned)):
        makers["tvm-tuned" if len(tuned) == 1 else f"tvm-tuned:{name}"] = make_engine(source)
    return makers


def _short_names(sources: tuple[WorkDir | Path, ...]) -> list[str]:
    """Each path's last parts, as few as tell them apart (`a/net.so` and `b/net.so`)."""
    paths = [s.path if isinstance(s, WorkDir) else s for s in sources]
    for depth in range(1, max((len(p.parts) for p in paths), default=1) + 1):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]  # the same path given twice: the rows would be the same too


def versus_onnxruntime(net, weights: dict, batch: int, library: Path, target, threads: int,
                       latency_ms: float) -> dict | None:
    """A tuned library's latency as a ratio to ONNX Runtime's, the two timed in turns.

    Either latency alone moves with the machine's load; their ratio, timed interleaved, mostly
    does not, so it can rank libraries tuned on different days. None where ONNX Runtime is not
    installed.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    from .target import machine
    # About two hundred runs each, in ten turns: outside load comes in bursts of seconds, and
    # with four turns one burst could still move the ratio by 5%.
    budget_s = min(max(latency_ms / 5, 0.2), 8.0)
    ort, tvm = run_bench(net, weights, batch, threads, ("onnxruntime", "tvm-tuned"), (library,),
                         machine(target)[1] or None, budget_s, 10)
    return {"onnxruntime_ms": ort.median_ms, "tvm_ms": tvm.median_ms, "ratio": tvm.median_ms / ort.median_ms,
            "threads": threads, "runs": min(ort.runs, tvm.runs)}
