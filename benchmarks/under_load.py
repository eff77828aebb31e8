"""ONNX Runtime against tuned TVM while a neighbour process takes part of one core.

On a shared 2-core machine the ratio between the two has moved with outside load (ResNet-50:
0.97x quiet, 1.05-1.07x loaded, in session 15). This makes the load a controlled variable: a
busy process that spins for `load`% of every 10 ms, left for the OS to place as a real
neighbour would be, beside `resdsl bench --engines onnxruntime,tvm-tuned`. Each bench is its
own process, so TVM's thread pool can be started with or without pinning its threads to cores
(`TVM_BIND_THREADS`, on by default in TVM; ONNX Runtime does not pin). Load levels and pinning
take turns, `--repeat` times, and the table gives each cell's median ratio.

Usage: python benchmarks/under_load.py specs/resnet50.rds --tuned WORKDIR \
           [--loads 0,50,100] [--repeat 2] [--json results/under_load.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

NEIGHBOUR = """
import sys, time
duty = float(sys.argv[1])
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < duty * 0.01:
        pass
    time.sleep((1 - duty) * 0.01)
"""


def resdsl(*args: str, env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "resdsl", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        sys.exit(f"resdsl {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def bench_once(spec: str, library: Path, load: int, bind: str, budget: float) -> dict:
    neighbour = (subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(load / 100)]) if load else None)
    try:
        out = resdsl("bench", spec, "--engines", "onnxruntime,tvm-tuned", "--tuned", str(library), "--json",
                     "--budget", str(budget), env={"TVM_BIND_THREADS": bind})
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    rows = {r["engine"]: r for r in json.loads(out)["results"]}
    ort, tvm = rows["onnxruntime"]["median_ms"], rows["tvm-tuned"]["median_ms"]
    return {"load": load, "bind": bind, "onnxruntime_ms": ort, "tvm_ms": tvm, "ratio": tvm / ort}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--tuned", required=True, help="a tuning work directory or a tuned .so")
    parser.add_argument("--loads", default="0,50,100", help="the neighbour's share of one core, in percent")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of timed runs per engine and bench")
    parser.add_argument("--json", type=Path, help="also write every bench's numbers here")
    args = parser.parse_args()
    loads = [int(x) for x in args.loads.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(args.tuned)
        if library.suffix != ".so":  # compile once; every bench then loads the same library
            library = Path(tmp) / "tuned.so"
            resdsl("compile", args.spec, "--target", "llvm", "--tuned", args.tuned, "-o", str(library))
        runs = []
        for r in range(args.repeat):
            for load in loads:
                for bind in ("1", "0") if r % 2 == 0 else ("0", "1"):
                    runs.append(bench_once(args.spec, library, load, bind, args.budget))
                    print(json.dumps(runs[-1]), file=sys.stderr)
    print(f"{args.spec}, {args.tuned}: tuned TVM / ONNX Runtime, median of {args.repeat} "
          f"(ONNX Runtime ms, TVM ms)")
    print("| neighbour load | TVM threads pinned (default) | TVM threads not pinned |")
    print("|---|---|---|")
    for load in loads:
        cells = []
        for bind in ("1", "0"):
            mine = [x for x in runs if x["load"] == load and x["bind"] == bind]
            cells.append(f"{statistics.median(x['ratio'] for x in mine):.3f}x "
                         f"({statistics.median(x['onnxruntime_ms'] for x in mine):.2f}, "
                         f"{statistics.median(x['tvm_ms'] for x in mine):.2f})")
        print(f"| {load}% of a core | {cells[0]} | {cells[1]} |")
    if args.json:
        from resdsl.tvm.target import host_cpu
        args.json.write_text(json.dumps({"spec": args.spec, "tuned": args.tuned, "cpu": host_cpu(),
                                         "cores": os.cpu_count(), "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
