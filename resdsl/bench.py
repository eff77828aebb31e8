"""`resdsl bench`: one network, the engines a user would pick instead, side by side.

Every engine runs the same weights on the same input with the same thread count; each reports
its median latency with spread, its ratio to ONNX Runtime, and how far its output is from
PyTorch eager (a wrong answer fast is no answer).
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import targets

REFERENCE = "torch"  # every row's output is compared with PyTorch eager's


@dataclass
class Result:
    engine: str
    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    runs: int = 0
    rel_err: float | None = None
    note: str = ""


def _time(fn: Callable[[], np.ndarray], budget_s: float) -> list[float]:
    """Run times in ms: at least one run, then more until `budget_s` is spent."""
    fn()  # warm-up: first-call allocations, lazy initialisation
    times: list[float] = []
    start = time.perf_counter()
    while not times or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def torch_engines(net, weights: dict, x: np.ndarray, threads: int, tuned: tuple, cpu: str | None) -> dict:
    """PyTorch eager (every other row's reference) and torch.compile, on the generated module."""
    import torch
    torch.set_num_threads(threads)
    model = net.to_torch().eval()
    # `weights` holds every key of the module's state_dict (load_weights checked them): strict.
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
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
    return {"torch": lambda: eager, "torch.compile": compiled}


def onnx_engines(net, weights: dict, x: np.ndarray, threads: int, tuned: tuple, cpu: str | None) -> dict:
    """ONNX Runtime and OpenVINO, on the same ONNX model. OpenVINO is what a user running CNNs on
    an x86 CPU picks instead: its latency hint, the same thread count, float32 (`openvino`) or its
    bf16 inference precision (`openvino-bf16`, on CPUs with AVX512-BF16 or AMX); a string in place
    of a maker, or returned by one, says why the row is skipped."""
    from functools import cache

    from .extras import install_line, missing

    @cache
    def model() -> bytes:
        from .backends.onnx_export import to_onnx
        return to_onnx(net.graph, weights).SerializeToString()

    def onnxruntime():
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model(), options, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, {"input": x})[0]

    def openvino(precision: str):
        def make():
            import openvino as ov
            core = ov.Core()
            if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
                # OpenVINO would quietly run f32 and the row would say bf16.
                return "skipped: this CPU has no bf16 instructions (AVX512-BF16 or AMX)"
            compiled = core.compile_model(core.read_model(model=model(), weights=b""), "CPU", {
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": precision})
            request = compiled.create_infer_request()
            return lambda: request.infer({0: x})[0].copy()
        return make
    absent = f"needs {install_line('openvino')}" if missing("openvino") else None
    return {"onnxruntime": onnxruntime, "openvino": absent or openvino("f32"),
            "openvino-bf16": absent or openvino("bf16")}


def engines(net, weights: dict, x: np.ndarray, threads: int, selected: tuple[str, ...], tuned: tuple,
            cpu: str | None):
    """name -> a function that prepares an engine and returns a zero-argument function that runs
    one inference and returns the logits. Each target's rows come from its `bench` function
    (`resdsl.targets`); the reference, PyTorch eager, always."""
    known = targets.engines()
    wanted = {targets.for_engine(e).name for e in (REFERENCE, *selected) if e in known}
    makers: dict = {}
    for target in targets.TARGETS.values():
        if target.name in wanted:
            makers.update(target.function("bench")(net, weights, x, threads, tuned, cpu))
    return makers


def run_bench(net, weights: dict, batch: int, threads: int, selected: tuple[str, ...], tuned: tuple,
              cpu: str | None, budget_s: float, rounds: int = 5,
              on_ready: Callable[[Result], None] | None = None) -> list[Result]:
    """Prepare every engine, then time them in `rounds` interleaved rounds.

    This machine's speed drifts over minutes (PyTorch eager has measured 52 and 67 ms an hour
    apart); timing one engine after another folds that drift into their ratios. Interleaved,
    every engine samples the same stretch of time, and each round starts with an untimed run so
    an engine's thread pool is awake again before its timings count.
    """
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))  # read when TVM's thread pool starts
    from .ir import INPUT
    x = np.random.default_rng(0).standard_normal((batch, *net.graph.shape(INPUT)), dtype=np.float32)
    makers = engines(net, weights, x, threads, selected, tuned, cpu)
    reference = makers[REFERENCE]()()
    rows: list[tuple[Result, Callable[[], np.ndarray] | None]] = []
    for name in _expand(selected, makers):
        result = Result(name)
        fn = None
        if name not in makers:
            result.note = "skipped: needs --tuned"
        elif isinstance(makers[name], str):
            result.note = f"skipped: {makers[name]}"
        elif isinstance(fn := makers[name](), str):  # it found, preparing, that it cannot run here
            result.note, fn = fn, None
        else:
            out = fn()
            result.rel_err = float(np.abs(out - reference).max() / max(np.abs(reference).max(), 1e-30))
        rows.append((result, fn))
        if on_ready:
            on_ready(result)
    times: dict[int, list[float]] = {i: [] for i, (_, fn) in enumerate(rows) if fn is not None}
    for _ in range(rounds):
        for i in times:
            # The budget, not a run count, sets the samples: a noisy machine needs many of them.
            times[i] += _time(rows[i][1], budget_s / rounds)
    for i, samples in times.items():
        result = rows[i][0]
        result.runs, result.median_ms = len(samples), statistics.median(samples)
        result.min_ms, result.max_ms = min(samples), max(samples)
    return [result for result, _ in rows]


def _expand(selected: tuple[str, ...], makers: dict) -> list[str]:
    """`tvm-tuned` stands for every tuned row there is."""
    names = []
    for name in selected:
        tuned = [m for m in makers if m.startswith("tvm-tuned:")] if name == "tvm-tuned" else []
        names += tuned or [name]
    return names
