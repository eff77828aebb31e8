"""Where ONNX Runtime spends its time inside a network, conv by conv, beside a tuned TVM build's tasks.

ONNX Runtime's profiler times every node of the optimised graph (its convs fused with their
residual add and ReLU, as TVM's are). Convs are grouped by their FLOPs (3x3 stride-1 convs that TVM
computes with Winograd apart), and set against the tasks of a `resdsl tune` report with the same
FLOPs: the per-task analysis the search budget is spent by. Both sides are per-run medians; TVM's
are the selection's cold re-timings (`report.json`), so a side by side is indicative, not a bench.

Usage: python benchmarks/ort_profile.py specs/resnet50.rds WORKDIR [--runs 30]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from tuning_summary import latency  # the chosen record's cold time, else the search's best


WINOGRAD = -1  # the group of 3x3 stride-1 convs small enough for Winograd (resdsl.tvm.winograd)


def conv_group(args: dict, winograd_pairs: int) -> int:
    """MFLOP (multiply-adds x 2) of a possibly NCHWc-blocked conv, from the shapes the profiler
    logs, or WINOGRAD for a conv that TVM computes with Winograd (other FLOPs): a 3x3 stride-1
    conv of up to `winograd_pairs` output x input channels."""
    inp, weight = (list(shape.values())[0] for shape in args["input_type_shape"][:2])
    out = list(args["output_type_shape"][0].values())[0]
    channels = lambda shape: shape[1] * shape[4] if len(shape) == 5 else shape[1]  # noqa: E731
    taps = math.prod(weight) / (channels(inp) * channels(out))
    if taps == 9 and inp[2:4] == out[2:4] and channels(inp) * channels(out) <= winograd_pairs:
        return WINOGRAD
    return round(2.0 * math.prod(out) * math.prod(weight) / channels(out) / 1e6)


def profile(spec: Path, runs: int, threads: int, batch: int = 1) -> dict[str, list]:
    import numpy as np
    import onnxruntime as ort
    from resdsl.backends.onnx_export import to_onnx
    from resdsl.backends.weights import load_weights
    from resdsl.ir import INPUT
    from resdsl.network import load
    net = load(spec)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(to_onnx(net.graph, load_weights(net.graph)).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, *net.graph.shape(INPUT)), dtype=np.float32)
    name = session.get_inputs()[0].name
    for _ in range(5):
        session.run(None, {name: x})  # warm-up, dropped below by keeping the last `runs` only
    for _ in range(runs):
        session.run(None, {name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, list] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            nodes[e["name"]].append(e)
    return {k: v[-runs:] for k, v in nodes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = parser.parse_args()
    report = json.loads((a.work_dir / "report.json").read_text())
    batch = report.get("batch") or 1  # profile ONNX Runtime at the batch the kernels were tuned at
    nodes = profile(a.spec, a.runs, a.threads, batch)
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.winograd import MAX_CHANNEL_PAIRS
    from resdsl.tvm.workdir import WorkDir
    lowering = Lowering.resolve("llvm", work_dir=WorkDir(a.work_dir))
    winograd_pairs = MAX_CHANNEL_PAIRS[2 if lowering.wide_winograd else 4] if lowering.winograd else 0
    ort_by_flops: dict[int, list[float]] = defaultdict(list)  # FLOPs (MFLOP, rounded) -> node medians, ms
    other = 0.0
    for events in nodes.values():
        ms = statistics.median(e["dur"] for e in events) / 1e3
        args = events[0]["args"]
        if "Conv" in args["op_name"]:
            ort_by_flops[conv_group(args, winograd_pairs)].append(ms)
        else:
            other += ms
    tvm_by_flops: dict[int, list[tuple[str, int, float]]] = defaultdict(list)
    tvm_other = 0.0
    for t in report["tasks"]:
        ms = latency(t) or 0.0
        if "conv2d" in t["name"]:
            # A task's FLOPs include its fused bias, residual add and ReLU (a few %).
            mflop = t["flops"] / 1e6
            near = sorted((abs(f - mflop), f) for f in ort_by_flops if f != WINOGRAD and abs(f - mflop) <= 0.03 * f)
            group = WINOGRAD if "winograd" in t["name"] else near[0][1] if near else round(mflop)
            tvm_by_flops[group].append((t["name"], t["weight"], ms))
        else:
            tvm_other += ms * t["weight"]
    print(f"{report['network']}, batch {batch}, {a.threads} threads; ONNX Runtime: medians of {a.runs} profiled runs; "
          f"TVM: {a.work_dir}")
    print()
    print("| MFLOP per conv | ORT convs | ORT ms | ORT GFLOP/s | TVM tasks (x weight) | TVM ms | TVM GFLOP/s | TVM / ORT |")
    print("|---|---|---|---|---|---|---|---|")
    ort_total = tvm_total = 0.0
    for mflop in sorted(set(ort_by_flops) | set(tvm_by_flops), key=lambda f: -sum(ort_by_flops.get(f, []))):
        o = sum(ort_by_flops.get(mflop, []))
        count = len(ort_by_flops.get(mflop, []))
        tasks = tvm_by_flops.get(mflop, [])
        t = sum(w * ms for _, w, ms in tasks)
        ort_total, tvm_total = ort_total + o, tvm_total + t
        names = ", ".join(f"{n} (x{w})" for n, w, _ in tasks) or "-"
        speed = lambda ms, n: f"{mflop * n / ms:.0f}" if ms and mflop != WINOGRAD else "-"  # noqa: E731
        label = "3x3 s1, Winograd in TVM" if mflop == WINOGRAD else mflop
        print(f"| {label} | {count} | {o:.3f} | {speed(o, count)} | {names} | {t:.3f} | "
              f"{speed(t, sum(w for _, w, _ in tasks))} | {t / o if o and t else float('nan'):.2f} |")
    print()
    print(f"convs: ONNX Runtime {ort_total:.2f} ms, TVM {tvm_total:.2f} ms; "
          f"everything else: ONNX Runtime {other:.2f} ms, TVM {tvm_other:.2f} ms")


if __name__ == "__main__":
    main()
