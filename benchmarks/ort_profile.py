"""Where ONNX Runtime and a tuned TVM build spend their time inside a network, conv by conv.

Both sides are timed inside a running network, warm as it runs: ONNX Runtime by its profiler
(every node of its optimised graph, convs fused with their residual add and ReLU as TVM's are),
TVM by the Relax VM's instrument hook around every kernel call of the same library `bench`
builds from the work directory (in bytecode, the only mode the hook sees calls in). A kernel's
time in the network is not its tuning time: tuning flushes the cache before every run, while in
the network a residual read from a kernel three calls back is still in the L3 cache.

Both run the convs in the graph's order, so the n-th conv of one is the n-th of the other; each
row says so only where their FLOPs agree (TVM's Winograd convs count other FLOPs). The summary
groups the convs by kind, and sets the sum of each side's calls against its whole run.

Usage: python benchmarks/ort_profile.py specs/resnet50.rds WORKDIR [--runs 30] [--per-conv]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

WARM_UP = 5  # runs of each engine left out
ROUNDS = 10


@dataclass
class Call:
    name: str  # ONNX Runtime's op type, or TVM's kernel
    ms: float  # median over the profiled runs
    mflop: float  # multiply-adds x 2; TVM's Winograd kernels count their own
    label: str = ""  # a conv's shape, from ONNX Runtime's side


class Engine:
    """One engine's plain runs (the whole run's time) and profiled runs (each call's time)."""
    def __init__(self, plain: Callable[[], object], profiled: Callable[[], object]) -> None:
        self.plain, self.profiled = plain, profiled
        self.whole: list[float] = []

    def round(self, runs: int) -> None:
        # The first run after the other engine's waits for this one's threads: untimed.
        self.plain()
        for _ in range(runs):
            start = time.perf_counter()
            self.plain()
            self.whole.append((time.perf_counter() - start) * 1e3)
        for _ in range(runs):
            self.profiled()

    def calls(self) -> list[Call]:
        raise NotImplementedError


class OnnxRuntime(Engine):
    """Its profiler times every node of the optimised graph."""
    def __init__(self, net, weights, x, threads: int) -> None:
        import onnxruntime as ort
        from resdsl.backends.onnx_export import to_onnx
        model = to_onnx(net.graph, weights).SerializeToString()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        plain = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feed = {plain.get_inputs()[0].name: x}
        super().__init__(lambda: plain.run(None, feed), lambda: self.session.run(None, feed))

    def calls(self) -> list[Call]:
        """Its nodes in the order they ran."""
        events = json.loads(Path(self.session.end_profiling()).read_text())
        nodes: dict[str, list] = defaultdict(list)
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                nodes[e["name"]].append(e)
        calls = []
        for timed in sorted(nodes.values(), key=lambda v: v[0]["ts"]):
            args = timed[0]["args"]
            ms = statistics.median(e["dur"] for e in timed[WARM_UP:]) / 1e3
            mflop, label = _conv(args) if "Conv" in args["op_name"] else (0.0, "")
            calls.append(Call(args["op_name"], ms, mflop, label))
        return calls


class TVM(Engine):
    """The VM's instrument hook times every kernel call, of the library `bench` builds from a
    work directory, in bytecode: the only mode the hook sees calls in."""
    def __init__(self, net, weights, x, work_dir: Path, threads: int) -> None:
        import tvm
        from tvm import relax
        from tvm.s_tir.analysis import estimate_tir_flops
        from resdsl.tvm.build import relax_module, schedule
        from resdsl.tvm.lowering import Lowering
        from resdsl.tvm.target import make_target
        from resdsl.tvm.workdir import WorkDir
        source = WorkDir(work_dir)
        lowering = Lowering.resolve("llvm", work_dir=source)
        target = make_target("llvm", cores=threads)
        mod = schedule(relax_module(net.graph, weights, x.shape[0], lowering), target, source, lowering)
        self.flops = {gv.name_hint: float(estimate_tir_flops(tvm.IRModule({"main": f}))) / 1e6
                      for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
        executable = relax.build(mod, target=target, exec_mode="bytecode")
        plain, profiled = (relax.VirtualMachine(executable, tvm.cpu()) for _ in range(2))
        profiled.set_instrument(self._instrument)
        self.times: list[list[float]] = []
        self.names: list[str] = []
        self.call, self.start = 0, 0.0
        tx = tvm.runtime.tensor(x, tvm.cpu())
        super().__init__(lambda: plain["main"](tx), self._profiled(lambda: profiled["main"](tx)))

    def _profiled(self, run: Callable[[], object]) -> Callable[[], object]:
        def profiled():
            self.call = 0
            return run()
        return profiled

    def _instrument(self, func, name, before, result, *args) -> int:
        if before:
            self.start = time.perf_counter()
        elif name in self.flops:
            if self.call == len(self.times):
                self.times.append([])
                self.names.append(name)
            self.times[self.call].append((time.perf_counter() - self.start) * 1e3)
            self.call += 1
        return 0  # go on as usual

    def calls(self) -> list[Call]:
        """Its kernel calls in order."""
        return [Call(n, statistics.median(t[WARM_UP:]), self.flops[n])
                for n, t in zip(self.names, self.times)]


def _conv(args: dict) -> tuple[float, str]:
    """MFLOP and a label (`256>64 1x1 /1 56x56`) of a conv, possibly NCHWc-blocked, from the
    shapes the profiler logs."""
    inp, weight = (list(shape.values())[0] for shape in args["input_type_shape"][:2])
    out = list(args["output_type_shape"][0].values())[0]
    channels = lambda shape: shape[1] * shape[4] if len(shape) == 5 else shape[1]  # noqa: E731
    cin, cout = channels(inp), channels(out)
    kh, kw = weight[-2:] if len(weight) == 4 else weight[2:4]
    stride = round(inp[2] / out[2])
    mflop = 2.0 * math.prod(out) * math.prod(weight) / cout / 1e6
    return mflop, f"{cin}>{cout} {kh}x{kw} /{stride} {out[2]}x{out[3]}"


def kind(label: str, tvm_name: str) -> str:
    """The group a conv is summed into."""
    if "winograd" in tvm_name:
        return "3x3 /1, Winograd in TVM"
    if label.startswith("3>"):
        return "stem"
    shape = label.split()[1] + " /" + label.split("/")[1].split()[0]
    if shape == "1x1 /1" and "_add" in tvm_name and tvm_name.count("_add") > 1:
        return "1x1 /1 adding the residual"
    return shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--runs", type=int, default=100,
                        help="runs of each engine, profiled and not (in 10 rounds, at least 5 each)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--per-conv", action="store_true", help="a row per conv, not per kind")
    a = parser.parse_args()
    import numpy as np
    from resdsl.backends.weights import load_weights
    from resdsl.ir import INPUT
    from resdsl.network import load
    os.environ.setdefault("TVM_NUM_THREADS", str(a.threads))
    from resdsl.tvm.databases import tuned_batch
    from resdsl.tvm.workdir import WorkDir
    batch = tuned_batch(WorkDir(a.work_dir))  # profile at the batch the kernels were tuned at
    net = load(a.spec)
    weights = load_weights(net.graph)
    x = np.random.default_rng(0).standard_normal((batch, *net.graph.shape(INPUT)), dtype=np.float32)
    engines = (OnnxRuntime(net, weights, x, a.threads), TVM(net, weights, x, a.work_dir, a.threads))
    # Load comes and goes in bursts of seconds on a shared machine, and moved either engine's time
    # by 10% from one minute to the next: the engines take turns, a few runs each.
    per_round = max(5, a.runs // ROUNDS)  # a median each: the first run after a switch is slow
    for engine in engines:
        engine.round(WARM_UP)
    for _ in range(ROUNDS):
        for engine in engines:
            engine.round(per_round)
    (ort_calls, ort_whole), (tvm_all, tvm_whole) = (
        (e.calls(), statistics.median(e.whole[WARM_UP:])) for e in engines)
    ort_convs = [c for c in ort_calls if "Conv" in c.name]
    tvm_convs = [c for c in tvm_all if "conv2d" in c.name]
    if len(ort_convs) != len(tvm_convs):
        raise SystemExit(f"{len(ort_convs)} convs in ONNX Runtime, {len(tvm_convs)} in TVM: no pairing")
    print(f"{a.spec.stem}, batch {batch}, {a.threads} threads, medians of {a.runs} runs; "
          f"TVM: {a.work_dir}")
    print()
    groups: dict[str, list[tuple[Call, Call]]] = defaultdict(list)
    if a.per_conv:
        print("| # | conv | ONNX Runtime ms | TVM kernel | TVM ms | TVM / ORT |")
        print("|---|---|---|---|---|---|")
    for i, (o, t) in enumerate(zip(ort_convs, tvm_convs)):
        winograd = "winograd" in t.name
        if not winograd and abs(o.mflop - t.mflop) > 0.05 * o.mflop:
            raise SystemExit(f"conv {i}: {o.label} ({o.mflop:.0f} MFLOP) against {t.name} "
                             f"({t.mflop:.0f} MFLOP): the two ran their convs in another order")
        groups[kind(o.label, t.name)].append((o, t))
        if a.per_conv:
            print(f"| {i} | {o.label} | {o.ms:.3f} | {t.name} | {t.ms:.3f} | {t.ms / o.ms:.2f} |")
    if a.per_conv:
        print()
    print("| convs | count | MFLOP each | ONNX Runtime ms (GFLOP/s) | TVM ms (GFLOP/s) | TVM / ORT |")
    print("|---|---|---|---|---|---|")
    for name, pairs in sorted(groups.items(), key=lambda g: -sum(o.ms for o, _ in g[1])):
        ort_ms, tvm_ms = sum(o.ms for o, _ in pairs), sum(t.ms for _, t in pairs)
        mflop = sum(o.mflop for o, _ in pairs)
        each = sorted({round(o.mflop) for o, _ in pairs})
        print(f"| {name} | {len(pairs)} | {', '.join(map(str, each))} | "
              f"{ort_ms:.2f} ({mflop / ort_ms:.0f}) | "
              f"{tvm_ms:.2f} ({mflop / tvm_ms:.0f}) | {tvm_ms / ort_ms:.2f} |")
    ort_conv_ms, tvm_conv_ms = sum(c.ms for c in ort_convs), sum(c.ms for c in tvm_convs)
    print(f"| all convs | {len(ort_convs)} | | {ort_conv_ms:.2f} | {tvm_conv_ms:.2f} | "
          f"{tvm_conv_ms / ort_conv_ms:.2f} |")
    ort_rest, tvm_rest = sum(c.ms for c in ort_calls) - ort_conv_ms, sum(c.ms for c in tvm_all) - tvm_conv_ms
    print(f"| everything else | | | {ort_rest:.2f} | {tvm_rest:.2f} | |")
    print()
    for engine, calls, whole in (("ONNX Runtime", ort_calls, ort_whole), ("TVM", tvm_all, tvm_whole)):
        print(f"{engine}: its calls sum to {sum(c.ms for c in calls):.2f} ms, "
              f"a whole run takes {whole:.2f} ms")
    print(f"whole runs, TVM / ONNX Runtime: {tvm_whole / ort_whole:.3f}")


if __name__ == "__main__":
    main()
