"""`resdsl bench`: one network, the engines a user would pick instead, side by side.

Every engine runs the same weights on the same input with the same thread count; each reports
its median latency with spread, its ratio to ONNX Runtime, and how far its output is from
PyTorch eager (a wrong answer fast is no answer).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ENGINES = ("torch", "torch.compile", "onnxruntime", "tvm", "tvm-tuned")


@dataclass
class Result:
    engine: str
    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    runs: int = 0
    rel_err: float | None = None
    note: str = ""


def _time(fn: Callable[[], np.ndarray], budget_s: float, min_runs: int = 3, max_runs: int = 50) -> list[float]:
    fn()  # warm-up: first-call allocations, lazy initialisation
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def engines(net, weights: dict, x: np.ndarray, threads: int, tuned: Path | None, cpu: str | None):
    """name -> a zero-argument function that runs one inference and returns the logits."""
    import torch
    torch.set_num_threads(threads)
    model = net.to_torch().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    tx = torch.from_numpy(x)

    def eager():
        with torch.no_grad():
            return model(tx).numpy()

    def compiled():
        fn = torch.compile(model)
        def run():
            with torch.no_grad():
                return fn(tx).numpy()
        return run

    def onnxruntime():
        import onnxruntime as ort
        from .backends.onnx_export import to_onnx
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(to_onnx(net.graph, weights).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        return lambda: session.run(None, {"input": x})[0]

    def tvm_engine(work_dir: Path | None):
        def make():
            import tvm
            from .backends import tvm_build
            if work_dir is not None and work_dir.suffix == ".so":
                vm, dev = tvm_build.load_vm(work_dir)
            else:
                target = tvm_build.make_target("llvm", cpu=cpu, cores=threads)
                # The tuned row uses the lowering its records were tuned for; untuned, the default.
                lowering = tvm_build.Lowering.resolve("llvm", None, None, work_dir)
                executable = tvm_build.build(tvm_build.relax_module(net.graph, weights, x.shape[0], lowering),
                                             target, work_dir, lowering)
                vm, dev = tvm.relax.VirtualMachine(executable, tvm.cpu()), tvm.cpu()
            tx_tvm = tvm.runtime.tensor(x, dev)
            return lambda: vm["main"](tx_tvm).numpy()
        return make

    return {"torch": lambda: eager, "torch.compile": compiled, "onnxruntime": onnxruntime,
            "tvm": tvm_engine(None), "tvm-tuned": tvm_engine(tuned) if tuned else None}


def run_bench(net, weights: dict, batch: int, threads: int, selected: tuple[str, ...], tuned: Path | None,
              cpu: str | None, budget_s: float, on_result: Callable[[Result], None] | None = None) -> list[Result]:
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))  # read when TVM's thread pool starts
    from .ir import INPUT
    x = np.random.default_rng(0).standard_normal((batch, *net.graph.shape(INPUT)), dtype=np.float32)
    makers = engines(net, weights, x, threads, tuned, cpu)
    reference = makers["torch"]()()
    results = []
    for name in selected:
        result = Result(name)
        maker = makers.get(name)
        if maker is None:
            result.note = "skipped: needs --tuned"
        else:
            fn = maker()
            out = fn()
            result.rel_err = float(np.abs(out - reference).max() / max(np.abs(reference).max(), 1e-30))
            times = _time(fn, budget_s)
            result.runs, result.median_ms = len(times), statistics.median(times)
            result.min_ms, result.max_ms = min(times), max(times)
        results.append(result)
        if on_result:
            on_result(result)
    return results
